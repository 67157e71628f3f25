"""One-off probe (issue 31): where a POST /predict's microseconds go in process, against GET /health.

    python benchmarks/request_path.py [--n 2000]

The served champion (registry or MODEL_DIR) in `create_app`, called as a WSGI app with a hand-made environ
(no test client, no HTTP): the whole request, then each step inside it timed in place (wrapped), then each
step alone in a warm loop. Medians of --n calls, microseconds.
"""
import argparse
import collections
import io
import statistics
import sys
import time

import numpy as np

from digits.decode import decode
from digits.normalise import normalise
from serve import answers, create_app, routes, uploads
from serve.config import Settings
from serve.model import load_champion
from testkit import ROOT

PNG = (ROOT / "serve" / "selftest" / "7.png").read_bytes()


def environ(path, body=b""):
    env = {"REQUEST_METHOD": "POST" if body else "GET", "PATH_INFO": path, "QUERY_STRING": "",
           "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
           "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
           "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
           "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8000"}
    if body:
        env.update(CONTENT_TYPE="image/png", CONTENT_LENGTH=str(len(body)))
    return env


def median_us(f, n):
    for _ in range(min(200, n)):
        f()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    n = parser.parse_args().n
    app = create_app(load_champion(1), Settings(model_poll_seconds=0))
    champion = app.serving.champion

    def call(path, body=b""):
        status = []
        out = b"".join(app(environ(path, body), lambda s, h, e=None: status.append(s)))
        assert status[0].startswith("200"), (status, out)

    print(f"{champion.label}; medians of {n}, microseconds")
    print(f"whole request: GET /health {median_us(lambda: call('/health'), n):.0f}, "
          f"POST /predict {median_us(lambda: call('/predict', PNG), n):.0f}")
    spent = collections.defaultdict(list)

    def timed(module, name, label):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[label].append(time.perf_counter() - start)
        setattr(module, name, wrapper)
        return original

    originals = [(m, name, timed(m, name, label)) for m, name, label in (
        (uploads, "upload_bytes", "upload_bytes"), (routes, "decode", "decode"), (routes, "normalise", "normalise"),
        (answers, "digits", "answers (model, temperature, answer, metrics)"))]
    median_us(lambda: call("/predict", PNG), n)
    print("inside /predict: " + ", ".join(f"{k} {statistics.median(v) * 1e6:.0f}" for k, v in spent.items()))
    for module, name, original in originals:
        setattr(module, name, original)
    gray = decode(PNG)
    x = normalise(gray)
    batch = x[None, ..., None]
    print(f"alone, warm: decode {median_us(lambda: decode(PNG), n):.0f}, normalise {median_us(lambda: normalise(gray), n):.0f}, "
          f"model {median_us(lambda: champion.predict(batch), n):.0f}, "
          f"answers {median_us(lambda: answers.digits([x], champion), n):.0f}")


if __name__ == "__main__":
    main()
