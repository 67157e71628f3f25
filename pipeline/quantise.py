"""Stage `quantise`: an INT8 copy of the float candidate, checked on validation, registered beside it.

    python -m pipeline.quantise

1. Fetch the float version that `register` wrote to champion/champion.json and check its sha256.
2. Quantise it statically with onnxruntime: int8 weights (per channel), uint8 activations whose ranges
   are calibrated on training data only (MNIST digits, digits drawn as uploads, non-digits).
3. Check: float and INT8 read validation data (MNIST validation digits, validation digits drawn as
   uploads, validation non-digits), each with the float version's temperature and rejection threshold.
   The INT8 copy passes when it gives the same answer (a digit, or "not a digit") for nearly every image,
   makes no more than a few extra errors and refuses as often (conf/quantise/default.yaml).
4. Log an MLflow run (stage=quantise) with the model, and, when it passed, register it as `digits-int8`
   (tags: its source version and sha256, the temperature and threshold it is served with, the check, its
   own sha256 last) and move `digits-int8@candidate` to it, if the float version is still
   `digits@candidate`. The promotion gate (ops/gate.py) moves `digits-int8@champion` with `digits@champion`:
   to the copy of the version it promotes. A server serves it in place of its float source only (serve/model.py).

A copy that fails the check is logged but neither registered nor served; the stage says why and exits 0:
the float version serves alone once the gate promotes it. Writes champion/int8/model.onnx and champion/int8.json.
"""
import json
import tempfile
from pathlib import Path

import numpy as np

from digits.contract import CANDIDATE, INPUT, INT8_MODEL_NAME, MODEL_NAME, digit_confidence, sha256, to_input, with_temperature
from pipeline import negatives, tracking, uploads
from pipeline.evaluate import onnx_session, predict
from pipeline.params import load
from pipeline.preprocess import load_split
from pipeline.register import RegisterError, retried

OUT_DIR = Path("champion") / "int8"
SUMMARY = Path("champion") / "int8.json"


def float_candidate(client, champion_file=Path("champion") / "champion.json"):
    """(model version, model.onnx bytes) of the version `register` chose, its sha256 checked twice."""
    import mlflow

    chosen = json.loads(champion_file.read_text())
    version = client.get_model_version(MODEL_NAME, str(chosen["version"]))
    expected = version.tags.get("model_sha256")
    if expected != chosen["model_sha256"]:
        raise RegisterError(f"{MODEL_NAME} version {version.version} has sha256 tag {expected}, but "
                            f"{champion_file} says {chosen['model_sha256']}: run `dvc repro register` again")
    with tempfile.TemporaryDirectory() as tmp:
        source = client.get_model_version_download_uri(MODEL_NAME, version.version)
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"{source}/model.onnx", dst_path=tmp)
        model_bytes = Path(path).read_bytes()
    if sha256(model_bytes) != expected:
        raise RegisterError(f"model.onnx of {MODEL_NAME} version {version.version} does not match its sha256 tag")
    return version, model_bytes


class Calibration:
    """onnxruntime's CalibrationDataReader: the calibration images in batches."""

    def __init__(self, images_uint8, input_name, batch):
        self.batches = iter([{input_name: to_input(images_uint8[i:i + batch])}
                             for i in range(0, len(images_uint8), batch)])

    def get_next(self):
        return next(self.batches, None)


def calibration_images(cfg, seed):
    rng = np.random.default_rng([seed, 6])
    x_train, _ = load_split("train")
    drawn, _ = uploads.load_train()
    non_digits = negatives.load_split("train")
    pick = lambda x, n: x[rng.choice(len(x), size=min(n, len(x)), replace=False)]  # noqa: E731
    return np.concatenate([pick(x_train, cfg["mnist"]), pick(drawn, cfg["uploads"]), pick(non_digits, cfg["negatives"])])


def quantise(float_path: Path, out_path: Path, images_uint8, cfg):
    """Static INT8 quantisation of float_path into out_path (the float model's metadata carried over)."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out_path.with_name("prepared.onnx")
    quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
    input_name = ort.InferenceSession(str(prepared), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    quantize_static(str(prepared), str(out_path), Calibration(images_uint8, input_name, cfg["calibration"]["batch"]),
                    quant_format={"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[cfg["format"]],
                    per_channel=cfg["per_channel"], reduce_range=cfg["reduce_range"],
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                      "percentile": CalibrationMethod.Percentile}[cfg["method"]])
    prepared.unlink()
    source, model = onnx.load(str(float_path)), onnx.load(str(out_path))
    metadata = {p.key: p.value for p in source.metadata_props}
    metadata["quantised"] = (f"int8 static {cfg['format']}, per_channel={cfg['per_channel']}, "
                             f"reduce_range={cfg['reduce_range']}, {cfg['method']}")
    del model.metadata_props[:]
    for key, value in sorted(metadata.items()):
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(out_path))


def answers(probabilities, temperature, threshold):
    """What the server answers for each image: its digit, or -1 for "not a digit" (serve/answers.py)."""
    calibrated = with_temperature(probabilities, temperature)
    return np.where(digit_confidence(calibrated) < threshold, -1, calibrated[:, :10].argmax(axis=1))


def check(float_session, int8_session, sets, temperature, threshold, cfg):
    """sets: {name: (uint8 images, labels or None for non-digits)} -> (metrics, passed, reasons)."""
    metrics, same, total, reasons = {}, 0, 0, []
    for name, (images, labels) in sets.items():
        a = answers(predict(float_session, images), temperature, threshold)
        b = answers(predict(int8_session, images), temperature, threshold)
        same, total = same + int((a == b).sum()), total + len(a)
        metrics[f"{name}_agreement"] = float((a == b).mean())
        for which, got in (("float", a), ("int8", b)):
            metrics[f"{name}_{which}_rejected"] = float((got == -1).mean())
            if labels is not None:
                metrics[f"{name}_{which}_errors"] = int((got != labels).sum())  # a refused digit is an error too
        change = abs(metrics[f"{name}_int8_rejected"] - metrics[f"{name}_float_rejected"])
        if change > cfg["max_rejection_change"]:
            reasons.append(f"{name}: refuses {metrics[f'{name}_int8_rejected']:.2%} against float's "
                           f"{metrics[f'{name}_float_rejected']:.2%}")
        if labels is not None:
            extra = (metrics[f"{name}_int8_errors"] - metrics[f"{name}_float_errors"]) / len(labels)
            if extra > cfg["max_extra_errors"]:
                reasons.append(f"{name}: {metrics[f'{name}_int8_errors']} errors against float's "
                               f"{metrics[f'{name}_float_errors']} of {len(labels)}")
    metrics["agreement"] = same / total
    if metrics["agreement"] < cfg["min_agreement"]:
        reasons.insert(0, f"agrees with float on {metrics['agreement']:.3%} of validation images, "
                          f"under {cfg['min_agreement']:.1%}")
    return metrics, not reasons, reasons


def validation_sets(params):
    x_val, y_val = load_split("val")
    drawn, drawn_labels = uploads.generate(x_val, y_val, params["quantise"]["check"]["uploads"],
                                           [params["seed"], 5], params["uploads"])
    return {"val": (x_val, y_val), "val_uploads": (drawn, drawn_labels), "val_negatives": (negatives.load_split("val"), None)}


def register(mlflow, client, source, run_id, model_uri, digest, tags):
    """digits-int8 version of this run, tagged (model_sha256 last), and its `candidate` alias if the source still
    is digits@candidate (`champion` follows its source when the gate promotes it: ops/promote.py)."""
    existing = [v for v in client.search_model_versions(f"name='{INT8_MODEL_NAME}'")
                if v.run_id == run_id and v.status == "READY"]
    version = existing[0] if existing else mlflow.register_model(model_uri, INT8_MODEL_NAME)
    for key, value in {**tags, "model_sha256": digest}.items():
        retried(client.set_model_version_tag, INT8_MODEL_NAME, version.version, key, value)
    candidate_now = client.get_model_version_by_alias(MODEL_NAME, CANDIDATE).version
    moved = str(candidate_now) == str(source.version)
    if moved:
        retried(client.set_registered_model_alias, INT8_MODEL_NAME, CANDIDATE, version.version)
    return str(version.version), moved


def main():
    import onnx

    params = load()
    cfg = params["quantise"]
    mlflow = tracking.setup()
    client = mlflow.MlflowClient()
    source, float_bytes = float_candidate(client)
    temperature = float(source.tags.get("temperature", 1.0))
    threshold = float(source.tags.get("rejection_threshold", 0.0))

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / "model.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        float_path = Path(tmp) / "float.onnx"
        float_path.write_bytes(float_bytes)
        quantise(float_path, out, calibration_images(cfg["calibration"], params["seed"]), cfg)
        metrics, passed, reasons = check(onnx_session(float_path), onnx_session(out), validation_sets(params),
                                         temperature, threshold, cfg["check"])
    digest = sha256(out.read_bytes())
    summary = {"source": f"{MODEL_NAME}@{source.version}", "source_sha256": source.tags["model_sha256"],
               "passed": passed, "reasons": reasons, **metrics, "model_sha256": digest,
               "bytes": out.stat().st_size, "float_bytes": len(float_bytes)}

    with mlflow.start_run(run_name=f"int8-of-v{source.version}",
                          tags={"stage": "quantise", "source_version": str(source.version), **tracking.process_tags()}) as run:
        mlflow.log_params(tracking.flatten(cfg, "quantise."))
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.set_tag("check", "passed" if passed else "failed: " + "; ".join(reasons))
        info = mlflow.onnx.log_model(onnx.load(str(out)), name="model", save_as_external_data=False)
    if passed:
        tags = {"source_version": str(source.version), "source_sha256": source.tags["model_sha256"],
                "temperature": f"{temperature:.6f}", "rejection_threshold": f"{threshold:.6f}",
                "metrics": json.dumps({k: round(v, 6) for k, v in metrics.items()}, sort_keys=True),
                "config": json.dumps(cfg, sort_keys=True), "check": "passed", "input": INPUT,
                "git_commit": tracking.git_commit(), "run_id": run.info.run_id}
        for key in ("variant", "classes", "val_accuracy", "test_accuracy"):
            if key in source.tags:
                tags[key] = source.tags[key]
        version, moved = register(mlflow, client, source, run.info.run_id, info.model_uri, digest, tags)
        summary.update(version=int(version), alias_moved=moved)
    SUMMARY.write_text(json.dumps(summary, indent=2) + "\n")
    where = (f"is {INT8_MODEL_NAME} version {summary['version']}" + (f", alias @{CANDIDATE}" if summary["alias_moved"] else
             f"; @{CANDIDATE} not moved: {MODEL_NAME}@{CANDIDATE} is no longer version {source.version}")) if passed else \
        "failed its check, not registered: " + "; ".join(reasons) + ". The float version serves alone once promoted."
    print(f"quantise: INT8 copy of {MODEL_NAME}@{source.version} ({summary['bytes']:,} bytes against "
          f"{summary['float_bytes']:,}), agreement {metrics['agreement']:.3%} on validation, {where}")


if __name__ == "__main__":
    try:
        main()
    except RegisterError as e:
        raise SystemExit(f"quantise: {e}")
