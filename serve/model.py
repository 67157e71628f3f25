"""Find the registered champion (and the number reader), fetch its model.onnx, verify it and run it with
onnxruntime; serve/serving.py switches to a new version when the alias moves.

Never TensorFlow here: onnxruntime answers a 28x28 digit in ~0.03 ms, TensorFlow takes ~3 s just to import.
A model is served only after two checks: its sha256 equals the one the register stage recorded, and it
reads the known digits in serve/selftest/ correctly through the same decode -> normalise -> model path
as an upload.

MODEL_PRECISION=int8 (the default) serves NAME-int8@champion in place of NAME@champion when it is the INT8
copy of that very version (its source_version and source_sha256 tags say so: pipeline/quantise.py) and it
passes the same two checks; otherwise the float version serves and the log and /model say why.
MODEL_PRECISION=float always serves the float version.
"""
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from digits.contract import ALIAS, DEFAULT_TRACKING_URI, INT8_SUFFIX, MODEL_NAME, READER_NAME, sha256, with_temperature
from digits.normalise import to_model_input
from serve import metrics
from serve.config import env_choice
# An MLflow tracking server that does not answer must be an error within seconds. MLflow's own defaults (7
# retries, backoff factor 2, 120 s timeout) kept a server starting against a dead URI silent for ~250 s
# (measured). Here: 3 tries over ~3 s, 10 s per connect/read. A running server keeps its model and polls
# again anyway. The environment still wins.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
SELFTEST_DIR = Path(__file__).parent / "selftest"  # one real MNIST digit per class, named by its label
METRIC_TAGS = ("val_accuracy", "test_accuracy", "temperature", "rejection_threshold", "test_ece_calibrated",
               "val_non_digits_rejected", "latency_ms_median")
log = logging.getLogger("serve.model")


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
    source: str = "registry"
    model_bytes: bytes = field(repr=False, default=b"")  # the verified file, for `python -m serve bundle`
    quantised_from: str | None = None  # "digits@7" when this is the INT8 copy of that version
    loaded_for: str = ""  # the registry's key when this was loaded (Registry.version): a new key is a switch
    note: str | None = None  # why the INT8 copy is not the one serving, when it is not
    kind: str = "digits"  # or "reader": the number reader (digits/line.py's contract)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def public_name(self) -> str:
        """The name clients ask for by (GET /v2/models/NAME): the float model's, also while its INT8 copy
        is the one answering."""
        return self.quantised_from.partition("@")[0] if self.quantised_from else self.name

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, 28, 28, 1] in [0, 1] -> [N, 10] probabilities (or [N, 11]: index 10 is "not a digit")."""
        with metrics.MODEL_LATENCY.time():
            return self.session.run(None, {self.input_name: batch.astype(np.float32, copy=False)})[0]

    @property
    def temperature(self) -> float:
        """Fitted on the validation split by the evaluate stage (1 = as trained)."""
        return float(self.tags.get("temperature", 1.0))

    @property
    def rejection_threshold(self) -> float:
        """Under this calibrated probability of its best digit, an image is "not a digit" (0 = never)."""
        return float(self.tags.get("rejection_threshold", 0.0))

    def calibrated(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities with the registered temperature applied: softmax(log p / T), over every class."""
        probabilities = self.predict(batch)
        return probabilities if self.temperature == 1.0 else with_temperature(probabilities, self.temperature)

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    def describe(self) -> dict:
        metrics = {k: float(v) for k, v in self.tags.items() if k in METRIC_TAGS}
        return {"name": self.name, "version": self.version, "alias": self.alias, "run_id": self.run_id,
                "sha256": self.sha256, "variant": self.tags.get("variant"), "source": self.source,
                "metrics": metrics, "quantised_from": self.quantised_from, "int8_not_served": self.note}


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


def self_test(champion: Champion):
    """Read the known digits through the upload path; a model that gets one wrong is not served."""
    files = sorted(SELFTEST_DIR.glob("*.png"))
    batch = np.concatenate([to_model_input(f.read_bytes()) for f in files])
    try:
        probabilities = champion.calibrated(batch)
    except Exception as e:  # a graph with the wrong input shape or type fails here, not on the first user
        raise ModelError(f"{champion.label} cannot run on a [N, 28, 28, 1] float32 batch: {e}") from e
    if probabilities.ndim != 2 or probabilities.shape[1] not in (10, 11):
        raise ModelError(f"{champion.label} answers shape {list(probabilities.shape)}, not [N, 10] or [N, 11]")
    answers, confidence = probabilities[:, :10].argmax(axis=1), probabilities[:, :10].max(axis=1)
    wrong = [f"{f.stem} read as {a}" for f, a in zip(files, answers) if str(a) != f.stem]
    wrong += [f"{f.stem} rejected as not a digit ({c:.3f} < {champion.rejection_threshold:.3f})"
              for f, c in zip(files, confidence) if c < champion.rejection_threshold]
    if wrong:
        raise ModelError(f"{champion.label} failed its self-test on known digits: {', '.join(wrong)}")


READER_SELFTEST = ("01234", "56789")  # numbers written with serve/selftest/'s digits, apart


def selftest_number(text: str) -> np.ndarray:
    """A page (grayscale [H, W] in [0, 1], dark ink on white) with `text` written in serve/selftest/'s digits,
    each cropped to its ink, a third of a digit's height apart."""
    crops = []
    for c in text:
        digit = np.asarray(Image.open(SELFTEST_DIR / f"{c}.png").convert("L"), np.float32) / 255
        rows, cols = np.flatnonzero(digit.max(axis=1) > 0.2), np.flatnonzero(digit.max(axis=0) > 0.2)
        crops.append(digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])
    height = max(c.shape[0] for c in crops)
    gap, margin = height // 3, height // 2
    page = np.zeros((height + 2 * margin, sum(c.shape[1] for c in crops) + gap * (len(crops) - 1) + 2 * margin), np.float32)
    x = margin
    for crop in crops:
        page[margin + height - crop.shape[0]:margin + height, x:x + crop.shape[1]] = crop
        x += crop.shape[1] + gap
    return 1 - page


def reader_self_test(champion: Champion):
    """The reader must read numbers written with the self-test digits through the /read path."""
    from digits import line as lines

    wrong = []
    for text in READER_SELFTEST:
        strip = lines.line(selftest_number(text))
        try:
            frames = champion.predict(lines.batch([strip.image]))
        except Exception as e:
            raise ModelError(f"{champion.label} cannot run on a [1, {lines.HEIGHT}, W, 1] float32 strip: {e}") from e
        if frames.ndim != 3 or frames.shape[2] != lines.CLASSES:
            raise ModelError(f"{champion.label} answers shape {list(frames.shape)}, not [N, T, {lines.CLASSES}]")
        read = lines.greedy_text(frames[0], strip.image.shape[1])
        if read != text:
            wrong.append(f"{text} read as {read or 'nothing'}")
    if wrong:
        raise ModelError(f"{champion.label} failed its self-test on known numbers: {', '.join(wrong)}")


def registry_key(version, copy=None) -> str:
    """What a server compares to see an alias move: "7" for float version 7, "7+3" with its INT8 copy 3."""
    return f"{version.version}+{copy.version}" if copy else str(version.version)


class Registry:
    """models:/name@alias in an MLflow tracking store. Unset arguments come from MODEL_NAME, MODEL_ALIAS
    and MLFLOW_TRACKING_URI."""

    def __init__(self, name=None, alias=None, tracking_uri=None, precision=None, kind="digits"):
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        self.name = name or os.environ.get("MODEL_NAME", MODEL_NAME)
        self.alias = alias or os.environ.get("MODEL_ALIAS", ALIAS)
        self.uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
        self.precision = precision or env_choice("MODEL_PRECISION", "int8", ("int8", "float"))
        self.kind = kind  # "reader": the number reader, self-tested on numbers, never an INT8 copy
        if kind == "reader":
            self.precision = "float"

    def __str__(self):
        return f"models:/{self.name}@{self.alias} in {self.uri}" + (" (float)" if self.precision == "float" else "")

    def _client(self):
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)  # no global MLflow state

    def _version(self, name=None):
        from mlflow.exceptions import MlflowException

        name = name or self.name
        if self.uri.startswith("sqlite:///") and not Path(self.uri.removeprefix("sqlite:///")).exists():
            raise ModelError(f"no MLflow store at {self.uri}: run `make repro` (or `dvc repro`) to train and "
                             "register a model, or point MLFLOW_TRACKING_URI at a tracking server, or MODEL_DIR at "
                             "a bundle (`python -m serve bundle DIR`)")
        try:
            return self._client().get_model_version_by_alias(name, self.alias)
        except MlflowException as e:
            reason = first_line(getattr(e, "message", e))
            if e.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                raise ModelError(f"cannot reach the MLflow registry at {self.uri}: {reason}") from e
            raise ModelError(f"no model registered as {name}@{self.alias} in {self.uri}: run `make repro` to "
                             f"train and register one ({reason})") from e
        except Exception as e:  # an unreachable tracking server, a locked or broken database ...
            raise ModelError(f"cannot reach the MLflow registry at {self.uri}: {first_line(e)}") from e

    def _int8_of(self, version):
        """(the INT8 copy's model version, None) when NAME-int8@alias is the copy of this float version, else
        (None, why not)."""
        if self.precision != "int8":
            return None, None
        try:
            copy = self._version(self.name + INT8_SUFFIX)
        except ModelError as e:
            return None, str(e)
        if copy.tags.get("source_version") != str(version.version) or \
                copy.tags.get("source_sha256") != version.tags.get("model_sha256"):
            return None, (f"{self.name}{INT8_SUFFIX}@{self.alias} (version {copy.version}) is the copy of "
                          f"{self.name} version {copy.tags.get('source_version')}, not of {version.version}")
        return copy, None

    def version(self) -> str:
        """The registry's key now, a few registry queries and no download: the float version the alias points
        to, "7+3" when the INT8 copy (version 3) of float version 7 would serve."""
        version = self._version()
        return registry_key(version, self._int8_of(version)[0])

    def load(self, threads=1) -> Champion:
        """The alias's model (its INT8 copy where there is one that passes), verified and self-tested."""
        version = self._version()
        copy, why = self._int8_of(version)
        if copy is not None:
            try:
                champion = self._fetch(self.name + INT8_SUFFIX, copy, threads)
                champion.quantised_from, champion.loaded_for = f"{self.name}@{version.version}", registry_key(version, copy)
                return champion
            except ModelError as e:
                why = f"{self.name}{INT8_SUFFIX} version {copy.version} refused: {e}"
                log.error("serving the float %s@%s instead: %s", self.name, version.version, why)
        champion = self._fetch(self.name, version, threads)
        champion.loaded_for, champion.note = registry_key(version, copy), why
        return champion

    def _fetch(self, name, version, threads) -> Champion:
        """Download a version's model.onnx (cached by version and sha256), verify and self-test it."""
        import mlflow
        from mlflow.exceptions import MlflowException

        expected = version.tags.get("model_sha256")
        if not expected:
            raise ModelError(f"{name} version {version.version} has no model_sha256 tag: it was not "
                             "registered by the pipeline, refusing to serve it")
        cache = Path(tempfile.gettempdir()) / "digits-models" / f"{name}-{version.version}-{expected[:12]}"
        cache.mkdir(parents=True, exist_ok=True)
        onnx_file = cache / "model.onnx"
        if not onnx_file.exists() or sha256(onnx_file.read_bytes()) != expected:
            try:
                source = self._client().get_model_version_download_uri(name, version.version)
                mlflow.artifacts.download_artifacts(artifact_uri=f"{source}/model.onnx", dst_path=str(cache),
                                                    tracking_uri=self.uri)
            except (MlflowException, OSError) as e:
                raise ModelError(f"cannot fetch model.onnx of {name} version {version.version}: {e}") from e
        return verified(onnx_file.read_bytes(), expected, threads, name=name, version=str(version.version),
                        alias=self.alias, run_id=version.run_id or "", tags=dict(version.tags), kind=self.kind)


def verified(model_bytes, expected_sha256, threads, **identity) -> Champion:
    """Verify and load the same bytes (no window to swap the file in between), then self-test."""
    digest = sha256(model_bytes)
    where = f"{identity['name']} version {identity['version']}"
    if digest != expected_sha256:
        raise ModelError(f"model.onnx of {where} has sha256 {digest}, but its metadata says {expected_sha256}: "
                         "the file is corrupt or was tampered with; refusing to serve it")
    champion = Champion(sha256=digest, session=onnx_session(model_bytes, threads), model_bytes=model_bytes,
                        **identity)
    (reader_self_test if champion.kind == "reader" else self_test)(champion)
    return champion


def export_bundle(champion: Champion, folder: Path):
    """A folder a container can serve without a registry: model.onnx + model.json (identity, sha256, tags)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(champion.model_bytes)
    (folder / "model.json").write_text(json.dumps(
        {"name": champion.name, "version": champion.version, "alias": champion.alias, "run_id": champion.run_id,
         "sha256": champion.sha256, "tags": champion.tags, "quantised_from": champion.quantised_from,
         "kind": champion.kind},
        indent=2, sort_keys=True) + "\n")


def load_bundle(folder, threads=1) -> Champion:
    """Serve a champion baked into the image (MODEL_DIR): still verified by sha256 and self-tested."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "model.json").read_text())
        model_bytes = (folder / "model.onnx").read_bytes()
    except (OSError, ValueError) as e:
        raise ModelError(f"MODEL_DIR={folder} does not hold a model bundle (model.onnx + model.json): {e}") from e
    return verified(model_bytes, meta["sha256"], threads, name=meta["name"], version=str(meta["version"]),
                    alias=meta["alias"], run_id=meta["run_id"], tags=meta["tags"], source="bundle",
                    quantised_from=meta.get("quantised_from"), kind=meta.get("kind", "digits"))


def load_champion(threads=1) -> Champion:
    """The champion named by the environment: MODEL_DIR (a baked-in bundle) or the MLflow registry."""
    if os.environ.get("MODEL_DIR"):
        return load_bundle(os.environ["MODEL_DIR"], threads)
    return Registry().load(threads)


def load_reader(threads=1):
    """The number reader the environment names -> (it or None, why none, the registry to follow or None).
    MODEL_DIR: the bundle in MODEL_DIR/reader, if there is one. Otherwise READER_NAME@MODEL_ALIAS (default
    digits-reader@champion) in the registry; READER_NAME=off serves without one. Without a reader /read
    cuts the number into digits (digits/segment.py) as before; a reader registered later is picked up by
    the alias polling."""
    if os.environ.get("MODEL_DIR"):
        folder = Path(os.environ["MODEL_DIR"]) / "reader"
        if not (folder / "model.json").exists():
            return None, f"no reader bundle in {folder}", None
        return load_bundle(folder, threads), None, None
    name = os.environ.get("READER_NAME", READER_NAME)
    if name.lower() in ("", "off"):
        return None, "READER_NAME=off", None
    registry = Registry(name=name, kind="reader")
    try:
        return registry.load(threads), None, registry
    except ModelError as e:
        log.warning("serving /read without the number reader: %s", e)
        return None, str(e), registry


def first_line(error) -> str:
    """An error's first line: SQLAlchemy appends the SQL and a link, which a startup message does not need."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
