"""Stage `train@<variant>`: train one model variant, keep its best epoch, export ONNX, log to MLflow.

    python -m pipeline.train cnn

Reads the variant's config from params.yaml (composed from conf/model/<variant>.yaml). Writes
models/<variant>/ (model.keras, model.onnx, run.json) and reports/<variant>/history.csv. A variant with
`reject: true` also learns class 10, "not a digit", from data/drawn/negatives (pipeline/negatives.py); one
with `uploads: true` also trains on training digits drawn as uploads (data/drawn/uploads,
pipeline/uploads.py); one with `corrections: true` also trains on users' reviewed corrections
(data/corrections/train, pipeline/corrections.py: digits, and "not a digit" too for a `reject` variant).
`reads` must cover what it learns from (data/drawn, data/corrections, or data for both): the DVC dep
that retrains it when they change. One with `members: N` trains N models from seeds seed, seed+1, ...
and exports the mean of their probabilities as one model (pipeline/models.py: average).
"""
import hashlib
import json
import math
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from digits.contract import CLASSES, INPUT, to_input  # noqa: E402
from pipeline import corrections, negatives, tracking, uploads  # noqa: E402
from pipeline.augment import random_warp, stroke_versions  # noqa: E402
from pipeline.models import average, build  # noqa: E402
from pipeline.params import load  # noqa: E402
from pipeline.run import clock  # noqa: E402
from pipeline.preprocess import OUT_DIR as DATA_DIR, load_split  # noqa: E402

DRAWN_DIR = negatives.OUT_DIR.parent  # data/drawn: negatives/ and uploads/, both drawn through digits/
assert uploads.OUT_DIR.parent == DRAWN_DIR


def dataset(x, y, batch_size, seed, augment=None, classes=10, shuffle=True):
    """Batches (float32 [B, 28, 28, 1], one-hot [B, classes]) from uint8 images, the whole set held in memory.

    x: uint8 [N, 28, 28], or [N, V, 28, 28] pen-width versions (`stroke_versions`), of which each batch
    takes one at random per image. Shuffling moves indices, not images; the warp runs on each batch in the
    graph. So the input costs a few ms a batch, not the tens the per-batch stroke filters did."""
    images, labels = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    versions = x.shape[1] if x.ndim == 4 else 0
    warp = {k: augment[k] for k in ("rotation_deg", "shift_px", "scale", "elastic")} if augment else None

    def batch(index):
        if versions:
            which = tf.random.uniform(tf.shape(index), 0, versions, dtype=index.dtype)
            picked = tf.gather_nd(images, tf.stack([index, which], axis=1))
        else:
            picked = tf.gather(images, index)
        picked = tf.cast(picked[..., None], tf.float32) / 255.0
        if warp:
            picked = random_warp(picked, **warp)
        return picked, tf.one_hot(tf.gather(labels, index), classes)

    ds = tf.data.Dataset.range(len(x))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).map(batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def training_images(x, augment):
    """What `dataset` takes for training: the images, or their pen-width versions when augment.stroke
    (x as it is when it already holds them: an ensemble draws them once for all its members)."""
    if x.ndim == 3 and augment and augment["enabled"] and augment.get("stroke"):
        return stroke_versions(x, augment["stroke"])
    return x


def with_negatives(split, digits, negatives_dir=negatives.OUT_DIR):
    """(x, y) digits plus the generated non-digits of the same split as class 10."""
    x, y = digits
    others = negatives.load_split(split, negatives_dir)
    return np.concatenate([x, others]), np.concatenate([y, np.full(len(others), 10, y.dtype)])


def learns_from(variant) -> list[Path]:
    """The data folders besides data/prepared the variant trains on: what its `reads` must cover."""
    return [*([DRAWN_DIR] if variant.get("reject") or variant.get("uploads") else []),
            *([corrections.OUT_DIR] if variant.get("corrections") else [])]


def reads_problem(name, variant):
    """Why the variant's `reads` (its DVC dep) does not cover what it learns from, or None when it does."""
    needs = learns_from(variant)
    if all(Path(variant["reads"]) in (folder, *folder.parents) for folder in needs):
        return None
    wanted = needs[0] if len(needs) == 1 else os.path.commonpath(needs)
    return (f"{name} learns from {', '.join(map(str, needs))} but says reads: {variant['reads']}; "
            f"set variants.{name}.reads={wanted}, or DVC will not retrain it when that data changes")


def corrections_train(variant, corrections_dir=corrections.OUT_DIR):
    """The exported corrections' train set as the variant learns from it: their digits, and their "not a
    digit" ones (class 10) only when the variant has that class."""
    x, y = corrections.load_split("train", corrections_dir)
    keep = np.ones(len(y), bool) if variant.get("reject") else y < 10
    return x[keep], y[keep]


def with_corrections(train, variant, corrections_dir=corrections.OUT_DIR):
    x, y = corrections_train(variant, corrections_dir)
    return np.concatenate([train[0], x]), np.concatenate([train[1], y.astype(train[1].dtype)])


def training_data(variant, data_dir=DATA_DIR, corrections_dir=corrections.OUT_DIR):
    """((x, y) train, (x, y) val) as the variant learns from them: MNIST's splits, plus the digits drawn
    as uploads and users' reviewed corrections (training only: validation stays MNIST's, as for every
    variant) and the non-digits."""
    train, val = load_split("train", data_dir), load_split("val", data_dir)
    if variant.get("uploads"):
        drawn = uploads.load_train()
        train = np.concatenate([train[0], drawn[0]]), np.concatenate([train[1], drawn[1].astype(train[1].dtype)])
    if variant.get("corrections"):
        train = with_corrections(train, variant, corrections_dir)
    if variant.get("reject"):
        train, val = with_negatives("train", train), with_negatives("val", val)
    return train, val


def optimizer(cfg, steps_per_epoch):
    total = cfg["epochs"] * steps_per_epoch
    warmup = int(cfg["warmup_epochs"] * steps_per_epoch)
    if cfg["schedule"] == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=cfg["learning_rate"] * (0.1 if warmup else 1.0), decay_steps=max(total - warmup, 1),
            warmup_target=cfg["learning_rate"] if warmup else None, warmup_steps=warmup)
    elif cfg["schedule"] == "constant":
        lr = cfg["learning_rate"]
    else:
        raise ValueError(f"unknown schedule {cfg['schedule']!r}")
    if cfg["optimizer"] == "adam":
        return keras.optimizers.Adam(lr)
    if cfg["optimizer"] == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=cfg["weight_decay"])
    raise ValueError(f"unknown optimizer {cfg['optimizer']!r}")


# --- Ctrl-C that sticks ---------------------------------------------------------------------------------
# TensorFlow calls back into Python from C++ (pybind). A KeyboardInterrupt raised inside such a callback comes
# out as "SystemError: <built-in function __import__> returned a result with an exception set", which TF prints
# and drops: training carried on and its MLflow run ended FINISHED (caught by tests/e2e/test_faults.py in CI). So
# the signal is remembered, raised again at the next batch, and once more before a run can end as finished.
ctrl_c_pressed = False


def remember_ctrl_c():
    """Install the SIGINT handler below, unless SIGINT is ignored (nohup) or already someone else's."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_ctrl_c)


def _on_ctrl_c(signum, frame):
    global ctrl_c_pressed
    ctrl_c_pressed = True
    raise KeyboardInterrupt


def stop_if_ctrl_c():
    if ctrl_c_pressed:
        raise KeyboardInterrupt("Ctrl-C (raised again: TensorFlow had dropped it)")


class StopOnCtrlC(keras.callbacks.Callback):
    """Ends fit at the first batch after a Ctrl-C that TensorFlow swallowed."""

    def on_train_batch_end(self, batch, logs=None):
        stop_if_ctrl_c()

    def on_test_batch_end(self, batch, logs=None):
        stop_if_ctrl_c()


class Progress(keras.callbacks.Callback):
    """One line a person can follow, in place of Keras's per-batch bar (which a log file and DVC's output
    mangle): within an epoch every `every` seconds how far it is, at each epoch's end its figures, the time
    it took and the ETA of the whole training (all members of an ensemble together)."""

    def __init__(self, name, epochs, steps, every=20.0, member=0, members=1, out=print):
        super().__init__()
        self.name, self.epochs, self.steps, self.every = name, epochs, steps, every
        self.member, self.members, self.out = member, members, out
        self.started = self.epoch_started = self.shown = None
        self.epoch = 0

    def _label(self, epoch):
        who = f" member {self.member + 1}/{self.members}" if self.members > 1 else ""
        return f"train {self.name}{who}: epoch {epoch + 1}/{self.epochs}"

    def _eta(self, done_epochs):
        per_epoch = (time.perf_counter() - self.started) / max(done_epochs, 1e-9)
        left = (self.epochs - done_epochs) + (self.members - self.member - 1) * self.epochs
        return clock(per_epoch * left)

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.epoch_started = self.shown = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if now - self.shown >= self.every:
            self.shown = now
            done = self.epoch + (batch + 1) / self.steps
            self.out(f"{self._label(self.epoch)} {100 * (batch + 1) / self.steps:3.0f}%, "
                     f"{clock(now - self.started)} so far, ETA {self._eta(done)}", flush=True)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        figures = ", ".join(f"{k} {v:.4f}" for k, v in logs.items() if k in ("loss", "accuracy", "val_accuracy"))
        self.out(f"{self._label(epoch)} done in {clock(time.perf_counter() - self.epoch_started)}: {figures}; "
                 f"ETA {self._eta(epoch + 1)}", flush=True)


class EpochLog(keras.callbacks.Callback):
    """Per-epoch metrics to MLflow and to a CSV that DVC plots; keeps the best weights by val accuracy.
    An ensemble's members log one after another: `earlier` holds the rows of the members before, the
    epochs count on across members and a `member` column says whose row it is."""

    def __init__(self, mlflow, csv_path, member=None, earlier=()):
        super().__init__()
        self.mlflow, self.csv_path, self.member = mlflow, csv_path, member
        self.best_accuracy, self.best_epoch, self.best_weights = -1.0, -1, None
        self.rows, self.started = list(earlier), time.perf_counter()
        self.first_epoch = len(self.rows) + 1

    def on_epoch_end(self, epoch, logs=None):
        step = self.first_epoch + epoch
        row = {"epoch": step, **({"member": self.member} if self.member is not None else {}),
               **{k: float(v) for k, v in logs.items()}, "seconds": round(time.perf_counter() - self.started, 2)}
        self.rows.append(row)
        if self.mlflow:
            # epoch_ prefix: the final val_accuracy/test_accuracy that evaluate logs are different numbers.
            self.mlflow.log_metrics({f"epoch_{k}": v for k, v in row.items() if k not in ("epoch", "member")},
                                    step=step)
        if logs["val_accuracy"] > self.best_accuracy:
            self.best_accuracy, self.best_epoch = float(logs["val_accuracy"]), epoch + 1
            self.best_weights = self.model.get_weights()
        keys = list(self.rows[0])
        self.csv_path.write_text(",".join(keys) + "\n" + "".join(
            ",".join(str(r[k]) for k in keys) + "\n" for r in self.rows))


def fit(variant, seed, train, val, csv_path, mlflow=None, member=None, earlier=(), name="model", members=1):
    """Train one model of a variant; returns (model with its best-epoch weights, EpochLog)."""
    keras.utils.set_random_seed(seed)
    cfg = variant["train"]
    (x_train, y_train), (x_val, y_val) = train, val
    classes = 11 if variant.get("reject") else 10
    model = build(variant["architecture"], classes)
    steps = math.ceil(len(x_train) / cfg["batch_size"])
    model.compile(optimizer=optimizer(cfg, steps),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg["label_smoothing"]),
                  metrics=["accuracy"])
    log = EpochLog(mlflow, csv_path, member, earlier)
    augment = variant["augment"] if variant["augment"]["enabled"] else None
    model.fit(dataset(training_images(x_train, augment), y_train, cfg["batch_size"], seed, augment, classes),
              validation_data=dataset(x_val, y_val, 1000, seed, classes=classes, shuffle=False), epochs=cfg["epochs"],
              callbacks=[StopOnCtrlC(), log, Progress(name, cfg["epochs"], steps, member=member or 0, members=members)],
              verbose=0, shuffle=False)  # dataset() shuffles
    model.set_weights(log.best_weights)
    return model, log


def fit_members(variant, seed, train, val, csv_path, mlflow, name="model"):
    """A variant's model: one trained model, or with `members: N` the average of N trained from seeds
    seed..seed+N-1. Returns (model, best val accuracy, {metric: value} to log)."""
    members = variant.get("members", 1)
    if members == 1:
        model, log = fit(variant, seed, train, val, csv_path, mlflow, name=name)
        return model, log.best_accuracy, {"best_epoch": log.best_epoch}
    trained, rows, details = [], [], {}
    train = training_images(train[0], variant["augment"]), train[1]  # pen widths drawn once, for every member
    for k in range(members):
        print(f"train: member {k + 1} of {members}, seed {seed + k}", flush=True)
        model, log = fit(variant, seed + k, train, val, csv_path, mlflow, member=k, earlier=rows, name=name,
                         members=members)
        trained.append(model)
        rows = log.rows
        details |= {f"member{k}_best_val_accuracy": log.best_accuracy, f"member{k}_best_epoch": log.best_epoch}
    model = average(trained)
    x_val, y_val = val
    accuracy = float((model.predict(to_input(x_val), batch_size=1000, verbose=0).argmax(1) == y_val).mean())
    return model, accuracy, details


def export_onnx(model, path: Path, check_images):
    """Keras -> ONNX (through tf2onnx); returns max |keras - onnxruntime| on check_images."""
    import onnxruntime as ort

    partial = path.with_suffix(".partial.onnx")
    model.export(str(partial), format="onnx", verbose=False)
    partial.replace(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: check_images})[0]
    return float(np.abs(onnx_out - model.predict(check_images, verbose=0)).max())


def file_sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def data_sha256(directory=DATA_DIR) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(directory).glob("*.npz")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def main(name):
    params = load()
    if name not in params["variants"]:
        sys.exit(f"train: no variant {name!r} in params.yaml (have: {', '.join(params['variants'])})")
    variant, seed = params["variants"][name], params["seed"]
    if problem := reads_problem(name, variant):
        sys.exit(f"train: {problem}")
    out_dir, report_dir = Path("models") / name, Path("reports") / name
    out_dir.mkdir(parents=True, exist_ok=True)
    report_dir.mkdir(parents=True, exist_ok=True)
    train, val = training_data(variant)
    taken = len(corrections_train(variant)[1]) if variant.get("corrections") else 0

    remember_ctrl_c()
    mlflow = tracking.setup()
    for run_id in tracking.end_abandoned_runs(name):
        print(f"train: {name}: MLflow run {run_id} was left RUNNING by a killed training; marked KILLED")
    # Tagged with its process as it is created: a kill at any later moment leaves a run the next one can end.
    with mlflow.start_run(run_name=name, tags={"variant": name, **tracking.process_tags()}) as run:
        mlflow.set_tags({"git_commit": tracking.git_commit(), "data_sha256": data_sha256(), "stage": "train"})
        mlflow.log_params(tracking.flatten({"seed": seed, "data": params["data"], **variant}))
        if variant.get("corrections"):
            mlflow.log_params({"corrections_watermark": params["corrections"]["watermark"], "corrections_taken": taken})
        print(f"train: {name}: {len(train[1])} training images, {len(val[1])} validation"
              f"{' (digits and non-digits)' if variant.get('reject') else ''}"
              f"{'; training digits include uploads' if variant.get('uploads') else ''}"
              f"{f'; {taken} corrections' if variant.get('corrections') else ''}; MLflow run {run.info.run_id}")
        started = time.perf_counter()
        model, best_accuracy, fit_details = fit_members(variant, seed, train, val, report_dir / "history.csv", mlflow, name)
        classes = model.output_shape[-1]
        train_seconds = time.perf_counter() - started
        model.summary(print_fn=lambda line, **_: None)  # builds weights; count below

        keras_path, onnx_path = out_dir / "model.keras", out_dir / "model.onnx"
        model.save(keras_path)
        max_diff = export_onnx(model, onnx_path, to_input(val[0][:256]))
        if max_diff > 1e-4:
            raise SystemExit(f"train: ONNX export disagrees with Keras by {max_diff:.2e} (> 1e-4)")

        import onnx

        mlflow.log_metrics({"best_val_accuracy": best_accuracy, **fit_details,
                            "train_seconds": train_seconds, "onnx_max_abs_diff": max_diff,
                            "parameters": model.count_params()})
        mlflow.log_artifact(str(keras_path), artifact_path="keras")
        mlflow.log_artifact(str(report_dir / "history.csv"), artifact_path="reports")
        # The served artifact: an MLflow ONNX model whose folder holds model.onnx (the model contract).
        # One self-contained file (no external-data side file): what gets hashed is all that gets loaded.
        # Requirements named, not inferred: MLflow's inference loads the model in a subprocess (6 s a run).
        requirements = [f"numpy=={np.__version__}", *mlflow.onnx.get_default_pip_requirements()]
        info = mlflow.onnx.log_model(onnx.load(str(onnx_path)), name="model", save_as_external_data=False,
                                     pip_requirements=requirements,
                                     metadata={"classes": list(CLASSES[:classes]), "input": INPUT})
        with tempfile.TemporaryDirectory() as tmp:  # hash what MLflow stored, the file that gets served
            onnx_sha = file_sha256(Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=tmp)) / "model.onnx")
        mlflow.set_tag("onnx_sha256", onnx_sha)
        run_info = {"variant": name, "run_id": run.info.run_id, "model_uri": info.model_uri,
                    **fit_details, "best_val_accuracy": best_accuracy,
                    "train_seconds": round(train_seconds, 1), "onnx_sha256": onnx_sha, "onnx_max_abs_diff": max_diff,
                    "parameters": model.count_params(), "class_names": list(CLASSES[:classes])}
        stop_if_ctrl_c()  # a Ctrl-C that TF dropped during export: the run must not end FINISHED
    (out_dir / "run.json").write_text(json.dumps(run_info, indent=2) + "\n")
    print(f"train: {name}: best val accuracy {best_accuracy:.4f} ({fit_details}), "
          f"{train_seconds:.0f}s, ONNX max |diff| {max_diff:.1e}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m pipeline.train VARIANT")
    main(sys.argv[1])
