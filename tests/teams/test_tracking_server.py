"""The team tracking server (ops/tracking_server.py) and moving a local store to it (ops/move_store.py), with
real servers: PostgreSQL, `mlflow server`, the smoke pipeline's `dvc repro` logging over HTTP, and
`python -m serve` following the alias from the server. Nothing is mocked."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from ops.move_store import MoveError, move
from ops.tracking_server import Postgres, TrackingError, running
from testkit.images import png_bytes
from testkit.project import BIN, copy_project, run
from testkit.server import fetch, free_port, get_json, server_env, start_server, stop_server

pytestmark = pytest.mark.teams
PASSWORD = "a-long-admin-password-for-tests"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, mnist_dir, tracking_server):
    """The smoke pipeline's `dvc repro`, logging to and registering in the tracking server."""
    root = tmp_path_factory.mktemp("project")
    env = {**copy_project(root, mnist_dir, "+experiment=smoke"), "MLFLOW_TRACKING_URI": tracking_server}
    log = run([str(BIN / "dvc"), "repro"], root, env).stdout
    return root, log


@pytest.fixture(scope="module")
def auth_server():
    """`python -m ops.tracking_server --auth` as a teammate runs it, on its own private PostgreSQL cluster
    (initdb, start; SIGTERM stops both: checked after). Its home is outside pytest's 0700 folders: as root the
    cluster belongs to `postgres`, who must reach it. -> (url, home)."""
    home, port = Path(tempfile.mkdtemp(prefix="digits-tracking-")), free_port()
    home.chmod(0o755)
    url, log = f"http://127.0.0.1:{port}", home / "cli.log"
    env = {**os.environ, "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD}
    with open(log, "wb") as out:
        cli = subprocess.Popen([sys.executable, "-m", "ops.tracking_server", "--home", str(home), "--port", str(port),
                                "--auth", "--workers", "1"], env=env, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)  # its group: what to kill should it not stop
    try:
        assert wait_for(lambda: cli.poll() is not None or fetch(url + "/health")[0] == 200, 180), log.read_text()
        assert cli.poll() is None, log.read_text()
        yield url, home
    finally:
        cli.send_signal(signal.SIGTERM)  # to the CLI alone, as a teammate's `kill` would
        try:
            code = cli.wait(60)
        except subprocess.TimeoutExpired:  # the test fails below; nothing it started may outlive it
            os.killpg(cli.pid, signal.SIGKILL)
            code = cli.wait()
        cluster = Postgres(home / "postgres")
        stopped = not cluster.running()
        if not stopped:
            cluster.stop()
        text = log.read_text()
        shutil.rmtree(home, ignore_errors=True)
    assert code == 0 and stopped and "tracking server: stopped" in text, text[-3000:]


def served_digits(port, digits, n=30):
    """How many of n real MNIST test digits the server at port reads right, and the model it says answered."""
    right, models = 0, set()
    for image, label in zip(digits[0][:n], digits[1][:n]):
        status, body = fetch(f"http://127.0.0.1:{port}/predict", png_bytes(image))
        answer = json.loads(body)
        assert status == 200, answer
        right += answer["prediction"] == int(label)
        models.add(answer["model"])
    return right / n, models


def wait_for(condition, seconds=30):
    """Whether condition() comes true within `seconds` (a connection refused counts as not yet)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if condition():
                return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def test_the_pipeline_logs_to_the_server_and_serve_follows_its_champion(smoke, tracking_server, digits):
    import mlflow

    root, log = smoke
    assert "Running stage 'register'" in log
    client = mlflow.MlflowClient(tracking_server, tracking_server)
    experiment = client.get_experiment_by_name("digits")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied: no storage credentials
    runs = client.search_runs([experiment.experiment_id], "tags.stage = 'train'")
    assert len(runs) >= 2 and all(len(client.get_metric_history(r.info.run_id, "epoch_val_accuracy")) >= 2 for r in runs)
    champion = client.get_model_version_by_alias("digits", "champion")
    assert champion.tags["model_sha256"] and client.search_model_versions("name = 'digits-reader'")

    port = free_port()
    env = server_env(None, MLFLOW_TRACKING_URI=tracking_server, MODEL_PRECISION="float")
    server = start_server(port, env, workers=1, threads=2, MODEL_POLL_SECONDS="1")
    try:
        accuracy, models = served_digits(port, digits)
        assert models == {f"digits@{champion.version}"} and accuracy >= 0.8
        # A second version of the same files (as a person would re-register), then the alias moves to it.
        again = client.create_model_version("digits", champion.source, champion.run_id, tags=champion.tags,
                                            model_id=champion.source.rpartition("/")[2])  # models:/m-...: its LoggedModel
        assert wait_for(lambda: client.get_model_version("digits", again.version).status == "READY")
        client.set_registered_model_alias("digits", "champion", again.version)
        assert wait_for(lambda: get_json(port, "/model")[1]["version"] == str(again.version))
        assert served_digits(port, digits)[1] == {f"digits@{again.version}"}
    finally:
        client.set_registered_model_alias("digits", "champion", champion.version)
        stop_server(server)


def test_basic_auth_refuses_strangers_and_admits_the_admin(auth_server, monkeypatch):
    import mlflow

    url, home = auth_server
    status, _ = fetch(url + "/api/2.0/mlflow/experiments/search?max_results=1")
    assert status == 401
    assert "database_uri = postgresql+psycopg://" in (home / "basic_auth.ini").read_text()
    assert PASSWORD not in (home / "basic_auth.ini").read_text()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    client = mlflow.MlflowClient(url, url)
    client.create_experiment("auth-check")
    from mlflow.server import get_app_client  # what docs/teams.md tells the admin to use

    get_app_client("basic-auth", tracking_uri=url).create_user("alice", "alice-password-long")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "alice-password-long")
    assert "auth-check" in [e.name for e in mlflow.MlflowClient(url, url).search_experiments()]  # READ by default
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-password-long")
    with pytest.raises(mlflow.exceptions.MlflowException, match="401|[Uu]nauthori"):
        mlflow.MlflowClient(url, url).search_experiments()


def test_a_busy_port_and_a_missing_password_are_clear_errors(tmp_path, tracking_server, monkeypatch):
    port = int(tracking_server.rsplit(":", 1)[1])
    with pytest.raises(TrackingError, match=f"port {port} on 127.0.0.1 is in use"):
        with running(tmp_path, port=port, backend_store_uri="postgresql+psycopg://x@127.0.0.1:1/x"):
            pass
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    with pytest.raises(TrackingError, match="MLFLOW_AUTH_ADMIN_PASSWORD"):
        with running(tmp_path, port=free_port(), auth=True):
            pass
    assert not (tmp_path / "postgres").exists()  # refused before anything was made


def local_store(folder, champion_files, tags):
    """A local SQLite store as the pipeline leaves one: a training run with metrics by step and an artifact,
    its model logged as a LoggedModel (pipeline.register's flavour) and registered as digits@champion and
    @candidate; in a subprocess, so this process's MLflow stays pointed nowhere, run in `folder`, where
    MLflow puts a SQLite store's artifacts (./mlruns)."""
    script = f"""
import json, mlflow
from mlflow.models import Model
from pipeline.register import ServedFlavour
mlflow.set_tracking_uri("sqlite:///{folder}/mlflow.db")
mlflow.set_experiment("digits")
tags = json.loads({json.dumps(json.dumps(tags))})
onnx = open("{champion_files}/model.onnx", "rb").read()
with mlflow.start_run(run_name="cnn", tags={{"stage": "train"}}) as run:
    mlflow.log_params({{"train.epochs": 2, "seed": 42}})
    for step in range(3):
        mlflow.log_metric("epoch_val_accuracy", 0.9 + step / 100, step=step)
    mlflow.log_dict({{"a": 1}}, "reports/metrics.json")
info = Model.log(artifact_path=None, name="served", flavor=ServedFlavour(onnx, json.load(open("{champion_files}/serving.json"))), run_id=run.info.run_id)
client = mlflow.MlflowClient()
version = mlflow.register_model(info.model_uri, "digits")
client.update_model_version("digits", version.version, description="moved champion")
for key, value in tags.items():
    client.set_model_version_tag("digits", version.version, key, value)
client.set_registered_model_alias("digits", "champion", version.version)
client.set_registered_model_alias("digits", "candidate", version.version)
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=folder, capture_output=True, timeout=300,
                   env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")})
    return f"sqlite:///{folder}/mlflow.db"


def test_move_store_copies_runs_and_registry_once_and_the_moved_champion_is_served(
        smoke, tracking_server, auth_server, tmp_path, monkeypatch, digits):
    import mlflow

    served = mlflow.MlflowClient(tracking_server, tracking_server)
    champion = served.get_model_version_by_alias("digits", "champion")
    files = mlflow.artifacts.download_artifacts(served.get_model_version_download_uri("digits", champion.version),
                                                dst_path=str(tmp_path / "files"), tracking_uri=tracking_server)
    source = local_store(tmp_path, files, {k: v for k, v in champion.tags.items() if k != "run_id"})
    with pytest.raises(MoveError, match="already has a registered model 'digits'"):
        move(source, tracking_server, log=lambda *a: None)  # the pipeline's `digits` is another model

    url, _ = auth_server
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    first = move(source, url, log=lambda *a: None)
    assert (first["runs"], first["versions"], first["aliases"]) == (1, 1, 2)
    again = move(source, url, log=lambda *a: None)
    assert (again["runs"], again["versions"], again["runs_skipped"], again["versions_skipped"]) == (0, 0, 1, 1)

    client = mlflow.MlflowClient(url, url)
    [run] = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "epoch_val_accuracy")] == \
        [(0, 0.9), (1, 0.91), (2, 0.92)] and run.data.params["seed"] == "42"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"reports", "registry"}
    [version] = client.search_model_versions("name = 'digits'")
    assert version.run_id == run.info.run_id and version.description == "moved champion"
    assert version.tags["model_sha256"] == champion.tags["model_sha256"]
    assert client.get_registered_model("digits").aliases == {"champion": version.version, "candidate": version.version}

    port = free_port()
    env = server_env(None, MLFLOW_TRACKING_URI=url, MODEL_PRECISION="float", READER_NAME="off")
    server = start_server(port, env, workers=1, threads=2)
    try:
        accuracy, models = served_digits(port, digits)
        assert models == {f"digits@{version.version}"} and accuracy >= 0.8
    finally:
        stop_server(server)
