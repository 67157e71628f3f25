"""Where a /predict's microseconds go, in process: the served champion answering a 28x28 MNIST PNG.

    python benchmarks/request_cost.py [--n 2000]

Times each step of POST /predict on its own (decode, normalise, the model, the answer, the JSON body, the
metrics and the access line), then the whole request through the Flask app (werkzeug's test client: no
socket, so what is left over is Flask's and werkzeug's own request handling), and prints the median
microseconds of each with its share of the whole. Serves what `python -m serve` would serve (the
registry's champion, its INT8 copy when one passes; MODEL_DIR or MODEL_PRECISION override). The HTTP
figures (rates against /health, p99) are benchmarks/api_load.py's; this says where to cut. No target:
it exits 1 only when the answer through the app differs from the one the steps make.
"""
import argparse
import io
import json
import os
import statistics
import sys
import time

import numpy as np
from PIL import Image

from digits.decode import decode
from digits.normalise import normalise
from pipeline.preprocess import load_split
from serve import answers, metrics
from serve.access import AccessLog
from serve.app import create_app
from serve.config import Settings


def median_us(step, n):
    times = []
    for _ in range(n):
        started = time.perf_counter_ns()
        step()
        times.append(time.perf_counter_ns() - started)
    return statistics.median(times) / 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="repeats of each step")
    args = parser.parse_args()

    os.environ.setdefault("ONNX_THREADS", "1")
    os.environ["ACCESS_LOG"] = "off"  # timed below on its own, to /dev/null
    app = create_app(settings=Settings())
    champion = app.serving.champion
    x_test, _ = load_split("test")
    buffer = io.BytesIO()
    Image.fromarray(x_test[0]).save(buffer, format="PNG")
    png = buffer.getvalue()
    limit = app.settings.max_image_pixels

    image = decode(png, limit)
    image28 = normalise(image)
    batch = np.stack([image28])[..., None]
    probabilities = champion.calibrated(batch)
    answer = {**answers.digits([image28], champion, probabilities)[0], "model": champion.label}
    with app.app_context():
        body = app.json.response(answer).get_data()
    devnull = AccessLog(os.devnull, "text")
    record = {"time": "2026-12-04T00:00:00.000+00:00", "request_id": "0" * 32, "remote": "127.0.0.1",
              "method": "POST", "route": "/predict", "path": "/predict", "protocol": "HTTP/1.1", "status": 200,
              "bytes": len(body), "latency_ms": 1.0, "model": champion.label, "prediction": 7, "user_agent": None}
    client = app.test_client()

    def whole():
        return client.post("/predict", data=png, content_type="image/png")

    steps = {
        "decode (PNG -> array)": lambda: decode(png, limit),
        "normalise (-> 28x28)": lambda: normalise(image),
        "model (onnxruntime + temperature)": lambda: champion.calibrated(batch),
        "answer (+ confidence/class metrics)": lambda: answers.digits([image28], champion, probabilities),
        "JSON body": lambda: app.json.response(answer).get_data(),
        "request metrics (count, latency, in flight)": lambda: (
            metrics.REQUESTS.labels("/predict", "POST", "200").inc(),
            metrics.LATENCY.labels("/predict").observe(0.001), metrics.IN_FLIGHT.inc(), metrics.IN_FLIGHT.dec()),
        "access line (text, to /dev/null)": lambda: devnull.write(record),
    }
    with app.app_context():
        timed = {name: median_us(step, args.n) for name, step in steps.items()}
    for _ in range(200):
        whole()
    total = median_us(whole, args.n)
    timed["Flask + werkzeug (the rest)"] = total - sum(timed.values())

    print(f"POST /predict, a 28x28 MNIST PNG ({len(png)} bytes), served by {champion.label}, "
          f"median of {args.n} each, in process")
    for name, us in timed.items():
        print(f"  {name:<45} {us:8.1f} us  {us / total:6.1%}")
    print(f"  {'whole request (werkzeug test client)':<45} {total:8.1f} us")

    got = json.loads(whole().get_data())
    if got != json.loads(body):
        print(f"FAIL: the app answered {got}, the steps {json.loads(body)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
