"""MLflow set-up shared by the stages: one place decides where runs and models live.

Default: SQLite inside mlruns/ with artifacts under mlruns/artifacts (MLflow 3's file store is
deprecated). MLFLOW_TRACKING_URI overrides it, e.g. a team's shared tracking server.
"""
import os
import socket
import subprocess
from pathlib import Path

from digits.contract import DEFAULT_TRACKING_URI as DEFAULT_URI, EXPERIMENT

STORE_DIR = Path("mlruns")  # DEFAULT_URI's folder: the SQLite file, and artifacts/ beside it


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def setup():
    """Point MLflow at the store and make sure the `digits` experiment exists; returns mlflow."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keeps DVC's logs readable
    import mlflow

    uri = tracking_uri()
    if uri == DEFAULT_URI:
        STORE_DIR.mkdir(exist_ok=True)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        artifacts = (STORE_DIR / "artifacts").resolve().as_uri() if uri == DEFAULT_URI else None
        mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts)
    mlflow.set_experiment(EXPERIMENT)
    return mlflow


def process_tags() -> dict:
    """Where a run's process lives: lets a later run tell an abandoned RUNNING run from a live one."""
    return {"host": socket.gethostname(), "pid": str(os.getpid())}


def end_abandoned_runs(variant) -> list:
    """A training killed outright (kill -9, OOM, a lost machine) cannot end its run: it stays RUNNING
    forever. Mark KILLED this variant's RUNNING runs whose process, on this host, no longer exists; a run of
    another host, or of a live process (a parallel `dvc exp run`), is left alone. -> the run ids ended."""
    import mlflow

    ended = []
    for run in mlflow.search_runs(experiment_names=[EXPERIMENT], output_format="list",
                                  filter_string=f"tags.variant = '{variant}' and attributes.status = 'RUNNING'"):
        tags = run.data.tags
        if tags.get("host") == socket.gethostname() and tags.get("pid", "").isdigit() and not alive(int(tags["pid"])):
            mlflow.MlflowClient().set_terminated(run.info.run_id, "KILLED")
            ended.append(run.info.run_id)
    return ended


def alive(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    return True


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


def flatten(config: dict, prefix="") -> dict:
    """{"train": {"epochs": 3}} -> {"train.epochs": 3}: MLflow params are flat."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
