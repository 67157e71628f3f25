"""Stage `evaluate_reader`: the number reader on validation and test strings, through onnxruntime.

    python -m pipeline.evaluate_reader

Reads models/reader/model.onnx the way the server does (digits/line.py decode) on the `strings` stage's
validation strings (choices: the rejection threshold) and test strings (reported, never chosen on).
Metrics: exact strings overall, by length and by gap kind (apart, touching, overlapping, mixed, single),
per-digit accuracy (1 - edit distance / length), non-numbers read as "not a number", and the time to read
a 6-digit strip on one onnxruntime thread. The rejection threshold (conf/reader `rejection_threshold`, or
when null the lowest digit confidence under which at most `max_rejected` of validation numbers fall) is
written with the metrics to reports/reader/metrics.json and logged to the reader's MLflow run.
"""
import json
import time
from pathlib import Path

import numpy as np

from digits import line as lines
from pipeline import strings, tracking
from pipeline.evaluate import onnx_session
from pipeline.params import load

MODEL, RUN = Path("models/reader/model.onnx"), Path("models/reader/run.json")
REPORT = Path("reports/reader/metrics.json")
MAX_REJECTED = 0.005  # a threshold chosen on validation rejects at most this share of real numbers


def readings(sess, strips, batch_size=128):
    """uint8 strips -> [[(class, probabilities, columns)], ...] as the server decodes them."""
    name = sess.get_inputs()[0].name
    order = np.argsort([s.shape[1] for s in strips])
    out = [None] * len(strips)
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        x = lines.batch([strips[k] / 255.0 for k in index])
        frames = sess.run(None, {name: x})[0]
        for row, k in enumerate(index):
            out[k] = lines.decode(frames[row], strips[k].shape[1])
    return out


def text_of(tokens, threshold=0.0) -> str | None:
    """What /read answers: the digits, or None when a token is no digit or under the threshold (or none)."""
    if not tokens or any(c == lines.NOT_A_DIGIT or p[c] < threshold for c, p, _ in tokens):
        return None
    return "".join(str(c) for c, _, _ in tokens)


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def choose_threshold(tokens, texts, max_rejected=MAX_REJECTED) -> float:
    """The highest threshold that rejects at most max_rejected of the numbers read right."""
    lowest = sorted(min(p[c] for c, p, _ in t) for t, text in zip(tokens, texts)
                    if text != "?" and text_of(t) == text)
    if not lowest:
        return 0.0
    k = int(np.floor(max_rejected * len(lowest)))
    return float(lowest[k]) if k < len(lowest) else 0.0


def metrics(tokens, texts, kinds, threshold) -> dict:
    read = [text_of(t, threshold) for t in tokens]
    numbers = [k for k, t in enumerate(texts) if t != "?"]
    others = [k for k, t in enumerate(texts) if t == "?"]
    out = {"exact": float(np.mean([read[k] == texts[k] for k in numbers])),
           "rejected": float(np.mean([read[k] is None for k in numbers])),
           "non_numbers_rejected": float(np.mean([read[k] is None for k in others])) if others else 1.0,
           "per_digit": 1 - sum(edit_distance(read[k] or "", texts[k]) for k in numbers) / sum(len(texts[k]) for k in numbers)}
    for length in range(1, 9):
        picked = [k for k in numbers if len(texts[k]) == length]
        if picked:
            out[f"exact_length_{length}"] = float(np.mean([read[k] == texts[k] for k in picked]))
    for kind in sorted({kinds[k] for k in numbers}):
        picked = [k for k in numbers if kinds[k] == kind]
        out[f"exact_{kind}"] = float(np.mean([read[k] == texts[k] for k in picked]))
    return out


def latency_ms(sess, strip, repeats=200) -> float:
    """Median ms to read one strip (model and decode) on the given session."""
    x = lines.batch([strip / 255.0])
    name = sess.get_inputs()[0].name
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        lines.decode(sess.run(None, {name: x})[0][0], strip.shape[1])
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def evaluate(cfg, val, test, model=MODEL):
    sess = onnx_session(model)
    val_tokens, test_tokens = readings(sess, val[0]), readings(sess, test[0])
    threshold = cfg["rejection_threshold"]
    if threshold is None:
        threshold = choose_threshold(val_tokens, val[1])
    six = [s for s, t in zip(val[0], val[1]) if len(t) == 6]
    result = {"rejection_threshold": threshold,
              **{f"val_{k}": v for k, v in metrics(val_tokens, val[1], val[2], threshold).items()},
              **{f"test_{k}": v for k, v in metrics(test_tokens, test[1], test[2], threshold).items()},
              "latency_ms_6_digits": latency_ms(onnx_session(model, threads=1), six[0]) if six else None}
    return result


def main():
    params = load()
    result = evaluate(params["reader"], strings.load_split("val"), strings.load_split("test"))
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    run = json.loads(RUN.read_text())
    mlflow = tracking.setup()
    with mlflow.start_run(run_id=run["run_id"]):
        mlflow.log_metrics({k: v for k, v in result.items() if v is not None})
    print(f"evaluate_reader: validation exact {result['val_exact']:.4f} (touching {result.get('val_exact_touching', 0):.4f}, "
          f"overlapping {result.get('val_exact_overlapping', 0):.4f}), non-numbers rejected "
          f"{result['val_non_numbers_rejected']:.4f}; test exact {result['test_exact']:.4f}; threshold "
          f"{result['rejection_threshold']:.3f}; a 6-digit strip {result['latency_ms_6_digits']:.2f} ms")


if __name__ == "__main__":
    main()
