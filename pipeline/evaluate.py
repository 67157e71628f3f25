"""Stage `evaluate@<variant>`: measure the exported model.onnx, the very file that gets served.

    python -m pipeline.evaluate cnn

Test accuracy, per-class precision/recall/F1, confusion matrix, calibration (a temperature fitted on
the validation split, expected calibration error before/after on test), a rejection threshold chosen
on validation, the share of held-out generated non-digits it rejects (data/drawn/negatives/val.npy), the
accuracy on users' held-out corrections (data/corrections/heldout, pipeline/corrections.py: the answer
the server would give, a digit or "not a digit", against the reviewed label; none when there are none),
and single-image latency with onnxruntime on one core.

Rejection, for every variant: an image is "not a digit" when the calibrated probability of its best
digit is under the threshold. A `reject: true` model puts its "not a digit" mass at index 10, which
takes it away from every digit; a ten-class model can only be unsure. Writes reports/<variant>/
(metrics.json for DVC, predictions.csv for DVC's confusion plot, PNG figures) and logs the same to
the variant's MLflow run.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np

from digits.contract import digit_confidence, to_input, with_temperature  # the server applies T with it too
from pipeline import corrections, negatives, tracking
from pipeline.params import load
from pipeline.preprocess import load_split


def onnx_session(path, threads=0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0 = onnxruntime's default (all cores)
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def predict(session, x_uint8, batch=1000):
    name = session.get_inputs()[0].name
    x = to_input(x_uint8)
    return np.concatenate([session.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


# --- calibration -------------------------------------------------------------------------------

def nll(probs, labels):
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)).mean())


def fit_temperature(probs, labels, low=0.05, high=20.0, iterations=60):
    """The T minimising validation NLL (convex in 1/T), by golden-section search on log T."""
    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5) - 1) / 2
    loss = lambda log_t: nll(with_temperature(probs, np.exp(log_t)), labels)  # noqa: E731
    for _ in range(iterations):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if loss(c) < loss(d):
            b = d
        else:
            a = c
    return float(np.exp((a + b) / 2))


def calibration_bins(probs, labels, bins):
    """Per confidence bin: (mean confidence, accuracy, count)."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    return [(float(confidence[which == b].mean()) if (which == b).any() else float((edges[b] + edges[b + 1]) / 2),
             float(correct[which == b].mean()) if (which == b).any() else 0.0, int((which == b).sum()))
            for b in range(bins)]


def expected_calibration_error(probs, labels, bins=15):
    return float(sum(n * abs(conf - acc) for conf, acc, n in calibration_bins(probs, labels, bins)) / len(labels))


# --- classification metrics --------------------------------------------------------------------

def confusion_matrix(labels, predictions, classes=10):
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def per_class(matrix):
    true_positive = np.diag(matrix).astype(float)
    precision = true_positive / np.maximum(matrix.sum(axis=0), 1)
    recall = true_positive / np.maximum(matrix.sum(axis=1), 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return {str(c): {"precision": round(float(precision[c]), 5), "recall": round(float(recall[c]), 5),
                     "f1": round(float(f1[c]), 5)} for c in range(len(matrix))}


def latency_ms(model_path, image, repeats):
    """Single-image onnxruntime latency on one core: (median, p99) in ms."""
    session = onnx_session(model_path, threads=1)
    name = session.get_inputs()[0].name
    for _ in range(50):  # warm-up
        session.run(None, {name: image})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {name: image})
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3), float(np.percentile(times, 99) * 1e3)


# --- figures -----------------------------------------------------------------------------------

def figures(out_dir, matrix, history_csv, calibration_before, calibration_after, worst, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5.5))
    shown = np.log1p(matrix)
    ax.imshow(shown, cmap="Blues")
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, str(n), ha="center", va="center", fontsize=7, color="white" if shown[i, j] > shown.max() / 2 else "black")
    ax.set(xlabel="predicted", ylabel="true", xticks=range(10), yticks=range(10), title=f"{title}: confusion (test)")
    fig.tight_layout()
    fig.savefig(out_dir / "confusion.png", dpi=110)
    plt.close(fig)

    if history_csv.exists():
        rows = np.genfromtxt(history_csv, delimiter=",", names=True)
        rows = np.atleast_1d(rows)
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        left.plot(rows["epoch"], rows["loss"], label="train")
        left.plot(rows["epoch"], rows["val_loss"], label="validation")
        left.set(xlabel="epoch", ylabel="loss", title="loss")
        right.plot(rows["epoch"], 100 * rows["accuracy"], label="train")
        right.plot(rows["epoch"], 100 * rows["val_accuracy"], label="validation")
        right.set(xlabel="epoch", ylabel="accuracy %", title="accuracy", ylim=(max(90, 100 * rows["val_accuracy"].min() - 1), 100))
        for a in (left, right):
            a.legend()
            a.grid(alpha=0.3)
        fig.suptitle(f"{title}: training curves")
        fig.tight_layout()
        fig.savefig(out_dir / "curves.png", dpi=110)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    for bins, label in ((calibration_before, "raw"), (calibration_after, "temperature-scaled")):
        ax.plot([c for c, _, n in bins if n], [a for _, a, n in bins if n], "o-", label=label)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    ax.set(xlabel="confidence", ylabel="accuracy", title=f"{title}: reliability (test)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "reliability.png", dpi=110)
    plt.close(fig)

    images, captions = worst
    cols = 5
    rows_n = max(1, int(np.ceil(len(images) / cols)))
    fig, axes = plt.subplots(rows_n, cols, figsize=(cols * 1.6, rows_n * 1.8))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, image, caption in zip(np.ravel(axes), images, captions):
        ax.imshow(image, cmap="gray")
        ax.set_title(caption, fontsize=8)
    fig.suptitle(f"{title}: most confident test errors")
    fig.tight_layout()
    fig.savefig(out_dir / "worst_errors.png", dpi=110)
    plt.close(fig)


def answers(probs_calibrated, x_uint8, threshold):
    """The server's decision for each image (digits.contract.answer): its best digit, or 10, "not a digit",
    when that digit's calibrated probability is under the threshold or the image has no ink at all."""
    said = probs_calibrated[:, :10].argmax(axis=1)
    refused = (digit_confidence(probs_calibrated) < threshold) | ~x_uint8.reshape(len(x_uint8), -1).any(axis=1)
    return np.where(refused, 10, said)


def corrections_metrics(session, heldout, temperature, threshold):
    """Accuracy on the held-out corrections, judged as the server answers; n only when there are none."""
    x, y = heldout
    if not len(y):
        return {"corrections_heldout_n": 0}
    said = answers(with_temperature(predict(session, x), temperature), x, threshold)
    return {"corrections_heldout_n": int(len(y)), "corrections_heldout_accuracy": float((said == y).mean())}


def evaluate(model_path, val, test, cfg, val_negatives, heldout_corrections=None):
    """All the numbers for one model file; returns (metrics dict, details for figures and files).
    heldout_corrections: (x, y) of users' held-out corrections (y 10: not a digit), or None to skip."""
    session = onnx_session(model_path)
    (x_val, y_val), (x_test, y_test) = val, test
    p_val, p_test, p_neg = predict(session, x_val), predict(session, x_test), predict(session, val_negatives)
    if p_val.shape[1] == 11:  # the "not a digit" class is calibrated with the rest
        temperature = fit_temperature(np.concatenate([p_val, p_neg]),
                                      np.concatenate([y_val, np.full(len(p_neg), 10, y_val.dtype)]))
    else:
        temperature = fit_temperature(p_val, y_val)
    p_test_cal, p_val_cal = with_temperature(p_test, temperature), with_temperature(p_val, temperature)
    threshold = float(np.quantile(digit_confidence(p_val_cal), cfg["max_val_rejection"]))
    p_test, p_test_cal = p_test[:, :10], p_test_cal[:, :10]  # from here on: which digit, and how sure
    predicted = p_test.argmax(axis=1)
    matrix = confusion_matrix(y_test, predicted)
    median_ms, p99_ms = latency_ms(model_path, to_input(x_test[:1]), cfg["latency_repeats"])
    metrics = {
        "val_accuracy": float((p_val.argmax(axis=1) == y_val).mean()),
        "test_accuracy": float((predicted == y_test).mean()),
        "test_errors": int((predicted != y_test).sum()),
        "val_nll": nll(p_val, y_val),
        "temperature": temperature,
        "test_ece": expected_calibration_error(p_test, y_test, cfg["ece_bins"]),
        "test_ece_calibrated": expected_calibration_error(p_test_cal, y_test, cfg["ece_bins"]),
        "rejection_threshold": threshold,
        "test_rejected_share": float((p_test_cal.max(axis=1) < threshold).mean()),
        "val_non_digits_rejected": float((digit_confidence(with_temperature(p_neg, temperature)) < threshold).mean()),
        "classes": int(p_val.shape[1]),
        "latency_ms_median": median_ms,
        "latency_ms_p99": p99_ms,
        "per_class": per_class(matrix),
    }
    if heldout_corrections is not None:
        metrics.update(corrections_metrics(session, heldout_corrections, temperature, threshold))
    wrong = np.flatnonzero(predicted != y_test)
    wrong = wrong[np.argsort(-p_test[wrong].max(axis=1))][:cfg["worst_errors"]]
    details = {
        "matrix": matrix, "predicted": predicted, "labels": y_test,
        "calibration": (calibration_bins(p_test, y_test, cfg["ece_bins"]), calibration_bins(p_test_cal, y_test, cfg["ece_bins"])),
        "worst": (x_test[wrong], [f"#{i}: {y_test[i]}→{predicted[i]} ({p_test[i].max():.2f})" for i in wrong]),
    }
    return metrics, details


def main(name):
    params = load()
    model_dir, out_dir = Path("models") / name, Path("reports") / name
    out_dir.mkdir(parents=True, exist_ok=True)
    run = json.loads((model_dir / "run.json").read_text())
    metrics, details = evaluate(model_dir / "model.onnx", load_split("val"), load_split("test"), params["evaluate"],
                                negatives.load_split("val"), corrections.load_split("heldout"))
    metrics = {"variant": name, **metrics}

    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out_dir / "predictions.csv").write_text("actual,predicted\n" + "".join(
        f"{a},{p}\n" for a, p in zip(details["labels"], details["predicted"])))
    figures(out_dir, details["matrix"], out_dir / "history.csv", *details["calibration"], details["worst"], name)

    mlflow = tracking.setup()
    with mlflow.start_run(run_id=run["run_id"]):
        mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float | int) and not isinstance(v, bool)})
        mlflow.log_dict({"confusion_matrix": details["matrix"].tolist()}, "reports/confusion_matrix.json")
        mlflow.log_dict(metrics, "reports/metrics.json")
        for png in sorted(out_dir.glob("*.png")):
            mlflow.log_artifact(str(png), artifact_path="reports")
    print(f"evaluate: {name}: test accuracy {metrics['test_accuracy']:.4f} ({metrics['test_errors']} errors), "
          f"val {metrics['val_accuracy']:.4f}, T={metrics['temperature']:.2f}, ECE {metrics['test_ece']:.4f} -> "
          f"{metrics['test_ece_calibrated']:.4f}, non-digits rejected {metrics['val_non_digits_rejected']:.1%}, "
          f"{metrics['latency_ms_median']:.3f} ms/digit, held-out corrections "
          f"{metrics.get('corrections_heldout_accuracy', float('nan')):.4f} of {metrics['corrections_heldout_n']}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m pipeline.evaluate VARIANT")
    main(sys.argv[1])
