"""The registered model as MLflow serves it: `mlflow.pyfunc.load_model` and the real `mlflow models serve`
answer real encoded files exactly as POST /predict does (pipeline/register.py ServedFlavour, digits/pyfunc.py)."""
import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digits.contract import sha256
from serve import create_app
from serve.config import Settings
from serve.model import verified
from testkit.images import encode, on_paper, png_bytes
from testkit.server import free_port

SERVING = {"temperature": 1.7, "rejection_threshold": 0.6, "variant": "cnn"}


@pytest.fixture(scope="module")
def store(small_onnx, tmp_path_factory):
    """A tracking store where small_onnx is registered as the register stage does it: digits@champion."""
    import mlflow
    from mlflow.models import Model

    from pipeline.register import ServedFlavour

    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root}/mlflow.db"
    client = mlflow.MlflowClient(uri, uri)
    experiment = client.create_experiment("t", artifact_location=(root / "artifacts").as_uri())
    run = client.create_run(experiment)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        info = Model.log(artifact_path=None, name="served", flavor=ServedFlavour(small_onnx, {**SERVING, "classes": list("0123456789")}),
                         run_id=run.info.run_id)
        version = mlflow.register_model(info.model_uri, "digits")
    finally:
        mlflow.set_tracking_uri(previous)
    client.set_registered_model_alias("digits", "champion", version.version)
    return uri


def uploads(digits):
    """Real encoded files: digits on paper (PNG, JPEG, WebP), MNIST's own PNG, a blank page, a scribble,
    and two that are no image at all."""
    noise = (np.random.default_rng(0).random((90, 90)) * 255).astype(np.uint8)
    return [on_paper(digits[0][i]) for i in range(6)] + [
        on_paper(digits[0][6], fmt="JPEG"), on_paper(digits[0][7], fmt="WEBP"), png_bytes(digits[0][8]),
        encode(Image.new("L", (120, 120), 255), "PNG"), encode(Image.fromarray(noise), "PNG"),
        b"not an image", b""]


def api_answers(small_onnx, files):
    champion = verified(small_onnx, sha256(small_onnx), 1, name="digits", version="1", alias="champion", run_id="r",
                        tags={k: str(v) for k, v in SERVING.items()})
    client = create_app(champion, Settings(model_poll_seconds=0)).test_client()
    said = []
    for data in files:
        body = client.post("/predict", data=data, content_type="application/octet-stream").get_json()
        said.append({"error": {**body["error"], "status": 400}} if "error" in body else
                    {k: v for k, v in body.items() if k not in ("model", "id")})  # the id is the server's alone
    return said


def test_pyfunc_load_model_answers_as_the_api(store, small_onnx, digits):
    import mlflow

    files, previous = uploads(digits), mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store)
    try:
        model = mlflow.pyfunc.load_model("models:/digits@champion")
        said = model.predict([base64.b64encode(f).decode() for f in files])
    finally:
        mlflow.set_tracking_uri(previous)
    expected = api_answers(small_onnx, files)
    assert said == expected
    assert {a.get("reason") for a in said} >= {None, "blank"} and said[-2]["error"]["code"] == "not_an_image"
    assert [a["prediction"] for a in said[:6]].count(None) < 2  # a real model that reads, not one that refuses


def test_mlflow_models_serve_answers_as_the_api(store, small_onnx, digits, tmp_path):
    files = uploads(digits)[:-1]  # "" is not valid JSON input to /invocations' schema-less model either way
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # its uvicorn
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/digits@champion",
                               "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              env=env, stdout=open(tmp_path / "serve.log", "w"), stderr=subprocess.STDOUT)
    try:
        body = json.dumps({"inputs": [base64.b64encode(f).decode() for f in files]}).encode()
        deadline = time.time() + 120
        while True:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body,
                                                 {"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=30) as response:
                    said = json.loads(response.read())["predictions"]
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None and time.time() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(30)
    assert said == api_answers(small_onnx, files)
