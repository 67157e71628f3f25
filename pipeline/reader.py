"""Stage `reader`: train the segmentation-free number reader, keep its best epoch, export ONNX, log to MLflow.

    python -m pipeline.reader

A convolutional network over the whole line strip with a CTC head (pipeline/models.py `reader`, settings
conf/reader/ctc.yaml), trained on the `strings` stage's written numbers (data/drawn/strings): it learns
the string, not the cuts, so touching and overlapping digits are read like any others (Hochuli et al.,
"Handwritten digit segmentation: is it still necessary?", Pattern Recognition 2018). Strips are batched
by width (each batch padded to its widest, rounded up to 32 px) and the loss is TensorFlow's CTC over
each strip's own frames. The best epoch by exact strings on validation is kept.

Writes models/reader/ (model.keras, model.onnx: the strip -> [N, W/2, 12] softmax, run.json) and
reports/reader/history.csv; the MLflow run is tagged `variant=reader`.
"""
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from digits import line as lines  # noqa: E402
from pipeline import strings, tracking  # noqa: E402
from pipeline.models import init_trunk, reader  # noqa: E402
from pipeline.params import load  # noqa: E402
from pipeline.train import file_sha256, optimizer as train_optimizer, remember_ctrl_c, stop_if_ctrl_c  # noqa: E402

OUT_DIR, REPORT_DIR = Path("models/reader"), Path("reports/reader")
MAX_LENGTH = 8  # digits in a training string, at most (conf/strings length)
BUCKET = 32  # px: strips are batched with strips of their width rounded up to this


def targets(texts):
    """Texts ("4096", "?") -> (int32 [N, MAX_LENGTH] classes padded with 0, int32 [N] lengths)."""
    out = np.zeros((len(texts), MAX_LENGTH), np.int32)
    for k, text in enumerate(texts):
        out[k, :len(text)] = [lines.NOT_A_DIGIT if c == "?" else int(c) for c in text]
    return out, np.array([len(t) for t in texts], np.int32)


def augmented(strips, rng, cfg):
    """Each training strip as another hand might have written it: squeezed or stretched along the line
    (by up to `width_scale`) and moved up or down (by up to `shift_px`), anew each epoch."""
    out = []
    for strip in strips:
        w = max(lines.STRIDE, round(strip.shape[1] * rng.uniform(1 - cfg["width_scale"], 1 + cfg["width_scale"])))
        image = np.asarray(Image.fromarray(strip).resize((min(w, lines.MAX_WIDTH), lines.HEIGHT), Image.BILINEAR))
        shift = int(rng.integers(-cfg["shift_px"], cfg["shift_px"] + 1))
        out.append(np.roll(image, shift, axis=0) if shift else image)  # the rows rolled round are black margin
    return out


def batches(strips, texts, batch_size, rng=None):
    """[(x float32 [B, 28, W, 1], classes, lengths, frames, indices)], strips grouped by width: each batch
    is padded to its bucket's width. With rng: shuffled within buckets and in batch order."""
    widths = np.array([s.shape[1] for s in strips])
    bucket = -(-widths // BUCKET) * BUCKET
    labels, lengths = targets(texts)
    out = []
    for b in np.unique(bucket):
        members = np.flatnonzero(bucket == b)
        if rng is not None:
            members = rng.permutation(members)
        for start in range(0, len(members), batch_size):
            index = members[start:start + batch_size]
            x = np.zeros((len(index), lines.HEIGHT, int(b), 1), np.float32)
            for row, k in enumerate(index):
                x[row, :, :widths[k], 0] = strips[k] / 255.0
            out.append((x, labels[index], lengths[index], (widths[index] // lines.STRIDE).astype(np.int32), index))
    if rng is not None:
        out = [out[k] for k in rng.permutation(len(out))]
    return out


def read(model, strips, batch_size=256) -> list:
    """Greedy readings ("4096", "?", "") of uint8 strips by a Keras model answering logits or probabilities."""
    texts = [None] * len(strips)
    for x, _, _, frames, index in batches(strips, [""] * len(strips), batch_size):
        out = model(x, training=False).numpy()
        for row, k in enumerate(index):
            texts[k] = lines.greedy_text(out[row], strips[k].shape[1])
    return texts


def exact(predicted, texts) -> float:
    return float(np.mean([p == t for p, t in zip(predicted, texts)])) if texts else 0.0


def fit(cfg, digit_model, train, val, seed, history_csv, log=print, mlflow=None):
    """Train on (strips, texts), starting from the trained digit model's trunk (None: from scratch);
    -> (the softmax model at the best epoch, best validation exact, its epoch)."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    keep = [k for k, s in enumerate(train[0]) if s.shape[1] <= cfg["train"]["max_width"]]
    strips, texts = [train[0][k] for k in keep], [train[1][k] for k in keep]
    logits_model = reader(cfg["architecture"])
    if digit_model is not None:
        init_trunk(logits_model, digit_model)
    steps = len(batches(strips, texts, cfg["train"]["batch_size"]))
    optimizer = train_optimizer({**cfg["train"], "optimizer": "adam", "schedule": "cosine"}, steps)
    optimizer.build(logits_model.trainable_variables)  # one state for all, whichever subset a step trains

    signature = [tf.TensorSpec([None, lines.HEIGHT, None, 1], tf.float32), tf.TensorSpec([None, MAX_LENGTH], tf.int32),
                 tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int32)]

    def stepper(variables):
        @tf.function(input_signature=signature)
        def step(x, labels, lengths, frames):
            with tf.GradientTape() as tape:
                logits = logits_model(x, training=True)
                loss = tf.reduce_mean(tf.nn.ctc_loss(labels, logits, lengths, frames, logits_time_major=False,
                                                     blank_index=lines.BLANK))
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss
        return step

    # The head learns on the digit model's features first (its warm-up epochs), then everything trains: a
    # random head's gradients would otherwise wash out the trunk's digit features before they are used.
    head = [v for layer in logits_model.layers if not layer.name.startswith("trunk_") for v in layer.trainable_weights]
    steps_by_phase = {"head": stepper(head), "all": stepper(logits_model.trainable_variables)}

    best, best_epoch, best_weights, rows = -1.0, 0, None, []
    for epoch in range(1, cfg["train"]["epochs"] + 1):
        started, losses = time.perf_counter(), []
        step = steps_by_phase["head" if digit_model is not None and epoch <= cfg["train"]["head_epochs"] else "all"]
        seen = augmented(strips, rng, cfg["train"]["augment"]) if cfg["train"]["augment"]["enabled"] else strips
        for x, labels, lengths, frames, _ in batches(seen, texts, cfg["train"]["batch_size"], rng):
            losses.append(float(step(x, labels, lengths, frames)))
            stop_if_ctrl_c()
        accuracy = exact(read(logits_model, val[0]), val[1])
        seconds = time.perf_counter() - started
        rows.append((epoch, float(np.mean(losses)), accuracy, seconds))
        log(f"reader: epoch {epoch}/{cfg['train']['epochs']}: loss {np.mean(losses):.3f}, "
            f"val exact {accuracy:.4f}, {seconds:.0f}s", flush=True)
        if mlflow:
            mlflow.log_metrics({"loss": float(np.mean(losses)), "val_exact": accuracy}, step=epoch)
        if accuracy > best:
            best, best_epoch, best_weights = accuracy, epoch, logits_model.get_weights()
    logits_model.set_weights(best_weights)
    Path(history_csv).write_text("epoch,loss,val_exact,seconds\n" + "".join(
        f"{e},{loss:.5f},{a:.5f},{s:.1f}\n" for e, loss, a, s in rows))
    model = keras.Model(logits_model.input, keras.layers.Softmax(name="probabilities")(logits_model.output),
                        name="reader")
    return model, best, best_epoch


def export_onnx(model, path: Path, strips):
    """Keras -> ONNX with a free batch and width; -> max |keras - onnxruntime| over strips of several widths."""
    import onnxruntime as ort

    partial = path.with_suffix(".partial.onnx")
    model(batches(strips[:1], [""], 1)[0][0], training=False)  # Keras exports only a model that has been called
    model.export(str(partial), format="onnx", verbose=False)
    partial.replace(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diff = 0.0
    for x, *_ in batches(strips, [""] * len(strips), 64)[:6]:
        onnx_out = session.run(None, {session.get_inputs()[0].name: x})[0]
        diff = max(diff, float(np.abs(onnx_out - model(x, training=False).numpy()).max()))
    return diff


def main():
    params = load()
    cfg, seed = params["reader"], params["seed"]
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    train, val = strings.load_split("train")[:2], strings.load_split("val")[:2]
    remember_ctrl_c()
    mlflow = tracking.setup()
    for run_id in tracking.end_abandoned_runs("reader"):
        print(f"reader: MLflow run {run_id} was left RUNNING by a killed training; marked KILLED")
    with mlflow.start_run(run_name="reader", tags={"variant": "reader", **tracking.process_tags()}) as run:
        mlflow.set_tags({"git_commit": tracking.git_commit(), "stage": "reader", "model_kind": "reader"})
        mlflow.log_params(tracking.flatten({"seed": seed, **cfg, "strings": params["strings"]}))
        print(f"reader: {len(train[1])} training strings, {len(val[1])} validation; MLflow run {run.info.run_id}")
        started = time.perf_counter()
        digit_model = keras.saving.load_model(Path("models") / cfg["init_from"] / "model.keras") if cfg["init_from"] else None
        model, best, best_epoch = fit(cfg, digit_model, train, val, seed, REPORT_DIR / "history.csv", mlflow=mlflow)
        train_seconds = time.perf_counter() - started
        keras_path, onnx_path = OUT_DIR / "model.keras", OUT_DIR / "model.onnx"
        model.save(keras_path)
        max_diff = export_onnx(model, onnx_path, val[0][:384])
        if max_diff > 1e-4:
            raise SystemExit(f"reader: ONNX export disagrees with Keras by {max_diff:.2e} (> 1e-4)")

        import onnx

        mlflow.log_metrics({"best_val_exact": best, "best_epoch": best_epoch, "train_seconds": train_seconds,
                            "onnx_max_abs_diff": max_diff, "parameters": model.count_params()})
        mlflow.log_artifact(str(REPORT_DIR / "history.csv"), artifact_path="reports")
        requirements = [f"numpy=={np.__version__}", *mlflow.onnx.get_default_pip_requirements()]
        classes = [str(d) for d in range(10)] + ["not_a_digit", "blank"]
        info = mlflow.onnx.log_model(onnx.load(str(onnx_path)), name="model", save_as_external_data=False,
                                     pip_requirements=requirements,
                                     metadata={"classes": classes, "input": lines.INPUT, "output": lines.OUTPUT})
        with tempfile.TemporaryDirectory() as tmp:
            onnx_sha = file_sha256(Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=tmp)) / "model.onnx")
        mlflow.set_tag("onnx_sha256", onnx_sha)
        run_info = {"variant": "reader", "run_id": run.info.run_id, "model_uri": info.model_uri,
                    "best_val_exact": best, "best_epoch": best_epoch, "train_seconds": round(train_seconds, 1),
                    "onnx_sha256": onnx_sha, "onnx_max_abs_diff": max_diff, "parameters": model.count_params(),
                    "class_names": classes}
        stop_if_ctrl_c()
    (OUT_DIR / "run.json").write_text(json.dumps(run_info, indent=2) + "\n")
    print(f"reader: best val exact {best:.4f} at epoch {best_epoch}, {train_seconds:.0f}s, ONNX max |diff| {max_diff:.1e}")


if __name__ == "__main__":
    if len(sys.argv) != 1:
        sys.exit("usage: python -m pipeline.reader")
    main()
