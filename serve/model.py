"""Find the registered champion in MLflow, fetch its model.onnx, verify it, run it with onnxruntime.

Never TensorFlow here: onnxruntime answers a 28x28 digit in ~0.03 ms, TensorFlow takes ~3 s just to import.
"""
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"


class ModelError(RuntimeError):
    """No verified model can be served; the message says why and what to do."""


@dataclass
class Champion:
    name: str
    version: str
    alias: str
    run_id: str
    sha256: str
    tags: dict
    session: object = field(repr=False)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, 28, 28, 1] in [0, 1] -> [N, 10] probabilities."""
        return self.session.run(None, {self.session.get_inputs()[0].name: batch.astype(np.float32)})[0]

    def describe(self) -> dict:
        metrics = {k: float(v) for k, v in self.tags.items()
                   if k in ("val_accuracy", "test_accuracy", "temperature", "rejection_threshold",
                            "test_ece_calibrated", "latency_ms_median")}
        return {"name": self.name, "version": self.version, "alias": self.alias, "run_id": self.run_id,
                "sha256": self.sha256, "variant": self.tags.get("variant"), "metrics": metrics}


def onnx_session(model_bytes: bytes, threads=1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread per session: a 28x28 CNN gains nothing from more, and workers must not fight over cores.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for corrupt files
        raise ModelError(f"not a loadable ONNX model: {e}") from e


def load_champion(name=None, alias=None, tracking_uri=None, threads=1) -> Champion:
    """Resolve models:/name@alias, download model.onnx, check its sha256 against the registry's tag.
    Unset arguments come from MODEL_NAME, MODEL_ALIAS and MLFLOW_TRACKING_URI."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow.exceptions import MlflowException

    name = name or os.environ.get("MODEL_NAME", "digits")
    alias = alias or os.environ.get("MODEL_ALIAS", "champion")
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise ModelError(f"no MLflow store at {uri}: run `make repro` (or `dvc repro`) to train and register a model")
    client = mlflow.MlflowClient(tracking_uri=uri)
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        raise ModelError(f"no model registered as {name}@{alias} in {uri}: run `make repro` to train and register "
                         f"one ({e.message.splitlines()[0] if getattr(e, 'message', None) else e})") from e
    expected = version.tags.get("model_sha256")
    if not expected:
        raise ModelError(f"{name} version {version.version} has no model_sha256 tag: it was not registered by "
                         "the register stage, refusing to serve it")
    cache = Path(tempfile.gettempdir()) / "digits-models" / f"{name}-{version.version}-{expected[:12]}"
    cache.mkdir(parents=True, exist_ok=True)
    onnx_file = cache / "model.onnx"
    if not onnx_file.exists() or sha256(onnx_file.read_bytes()) != expected:
        mlflow.set_tracking_uri(uri)
        try:
            mlflow.artifacts.download_artifacts(f"models:/{name}/{version.version}/model.onnx", dst_path=str(cache))
        except (MlflowException, OSError) as e:
            raise ModelError(f"cannot fetch model.onnx of {name} version {version.version}: {e}") from e
    model_bytes = onnx_file.read_bytes()  # verify and load the same bytes: no window to swap the file
    digest = sha256(model_bytes)
    if digest != expected:
        raise ModelError(f"model.onnx of {name} version {version.version} has sha256 {digest}, but the registry "
                         f"says {expected}: the file is corrupt or was tampered with; refusing to serve it")
    return Champion(name=name, version=str(version.version), alias=alias, run_id=version.run_id or "",
                    sha256=digest, tags=dict(version.tags), session=onnx_session(model_bytes, threads))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
