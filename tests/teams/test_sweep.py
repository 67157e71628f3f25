"""ops/sweep.py for real: a Ray head on loopback (ops/ray_head.py), the session's MLflow tracking server, four
trials of a small CNN on a few thousand real MNIST digits in a copy of conf/, the best written back as a
Hydra experiment, and that experiment's params trained again by the train stage itself."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from ops import ray_head
from ops.sweep import threads
from ops.sweep_conf import compose
from pipeline import tracking
from pipeline.params import dump
from pipeline.preprocess import split
from testkit import ROOT
from testkit.project import run as succeeded  # subprocess.run failing with the output

pytestmark = pytest.mark.teams

TRIALS = 4
SET = ["variants.cnn.train.epochs=2", "variants.cnn.architecture.stages=[[8],[16]]",
       "~sweep.space.train.epochs", "~sweep.space.architecture.stages", "sweep.scheduler.grace_period=1"]


@pytest.fixture
def head():
    """A private Ray head on 127.0.0.1 with 2 CPUs, stopped after (the test stops it itself, and checks)."""
    started = ray_head.start(num_cpus=2)
    yield started
    ray_head.stop(started)


@pytest.fixture
def project(tmp_path, mnist):
    """A project folder as the sweep reads one: a copy of conf/, and data/prepared as the preprocess stage
    writes it, of 3,000 training and 500 validation digits."""
    root = tmp_path / "project"
    shutil.copytree(ROOT / "conf", root / "conf")
    (root / "data" / "prepared").mkdir(parents=True)
    splits = split(mnist["x_train"], mnist["y_train"], mnist["x_test"], mnist["y_test"], validation_size=500,
                   seed=42, train_limit=3000, test_limit=500)
    for name, (x, y) in splits.items():
        np.savez_compressed(root / "data" / "prepared" / f"{name}.npz", x=x, y=y)
    return root


def registry_state(client):
    """Every registered model's versions and aliases: what a sweep must leave as it is."""
    return sorted((m.name, tuple(sorted(m.aliases.items())) if isinstance(m.aliases, dict) else tuple(m.aliases),
                   tuple(sorted(v.version for v in client.search_model_versions(f"name='{m.name}'"))))
                  for m in client.search_registered_models())


def test_sweep_on_ray_logs_each_trial_and_writes_an_override_that_reproduces_the_best(
        head, project, tracking_server, tmp_path):
    import mlflow

    client = mlflow.MlflowClient(tracking_server)
    before = registry_state(client)
    name = f"t{os.getpid()}"
    summary_path = tmp_path / "summary.json"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_server}
    env.pop("RAY_ADDRESS", None)
    result = succeeded([sys.executable, "-m", "ops.sweep", "--project", str(project), "--address", head.address,
                        "--variant", "cnn", "--trials", str(TRIALS), "--name", name, "--summary", str(summary_path),
                        "--set", *SET], ROOT, env, timeout=600)  # fails with its output when the sweep fails
    summary = json.loads(summary_path.read_text())
    assert summary["trials"] == TRIALS and summary["failed"] == 0
    assert f"python -m pipeline.params +experiment=sweep_{name}" in result.stdout
    assert f"dvc exp run -S '+experiment=sweep_{name}'" in result.stdout

    # Each trial its own MLflow run, a child of the sweep's run, in the sweep's experiment, with per-epoch metrics.
    experiment = client.get_experiment_by_name(f"digits-sweep-{name}")
    runs = client.search_runs([experiment.experiment_id])
    parent = [r for r in runs if r.data.tags.get("stage") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("stage") == "sweep-trial"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert len(trials) == TRIALS
    for run in trials:
        assert run.data.tags["sweep"] == name and run.data.tags["variant"] == "cnn"
        assert run.data.tags["mlflow.parentRunId"] == parent[0].info.run_id
        assert run.info.status == "FINISHED"  # stopped early or not, none left RUNNING or FAILED
        history = client.get_metric_history(run.info.run_id, "epoch_val_accuracy")
        stopped = run.data.tags.get("stopped_early") == "true"
        # A stopped trial learns of the stop at its next report, so it may have logged the epoch it was in
        # (seen in CI: ASHA stopped one after epoch 1, and its epoch 2 was logged before the stop reached it).
        assert [m.step for m in history] in ([[1], [1, 2]] if stopped else [[1, 2]])
        if not stopped:
            assert run.data.metrics["best_val_accuracy"] == max(m.value for m in history)
        assert {"train.learning_rate", "train.batch_size", "architecture.dropout", "seed"} <= set(run.data.params)
    assert len({r.data.params["train.learning_rate"] for r in trials}) == TRIALS  # sampled, not one config
    best = client.get_run(summary["best_run_id"])
    assert best.data.metrics["best_val_accuracy"] == pytest.approx(summary["best_value"])
    assert summary["best_value"] == max(r.data.metrics.get("best_val_accuracy", 0) for r in trials)

    # A sweep registers nothing and moves no alias: no logged model either.
    assert registry_state(client) == before
    assert not client.search_logged_models(experiment_ids=[experiment.experiment_id])

    # The override composes into params.yaml carrying exactly the best trial's config (as its run logged it).
    override = project / "conf" / "experiment" / f"sweep_{name}.yaml"
    assert override.read_text().startswith("# @package _global_\n")
    assert not (ROOT / "conf" / "experiment" / override.name).exists()
    params = compose(project / "conf", [f"+experiment=sweep_{name}"])
    assert params == compose(project / "conf", SET[:2] + [f"variants.cnn.{k}={json.dumps(v)}" for k, v in
                                                          tracking.flatten(summary["best_sampled"]).items()])
    # `dvc exp run -S '+experiment=sweep_<name>'` composes params.yaml with DVC's own Hydra call: the same.
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(tmp_path / "dvc-params.yaml", str(project / "conf"), None, "config",
                     str(project / ".dvc" / "hydra_plugins"), [f"+experiment=sweep_{name}"])
    assert yaml.safe_load((tmp_path / "dvc-params.yaml").read_text()) == params
    logged = {k: str(v) for k, v in tracking.flatten({"seed": params["seed"], **params["variants"]["cnn"]}).items()}
    assert logged == best.data.params

    # ... and the train stage, run on those params, gets the trial's validation accuracy.
    (project / "params.yaml").write_text(dump(params))
    local = {**env, **threads(1), "MLFLOW_TRACKING_URI": f"sqlite:///{project}/mlruns.db"}
    (project / "mlruns").mkdir()
    succeeded([sys.executable, "-m", "pipeline.train", "cnn"], project, local, timeout=600)
    again = json.loads((project / "models" / "cnn" / "run.json").read_text())["best_val_accuracy"]
    assert again == pytest.approx(summary["best_value"], abs=0.01), (again, summary["best_value"])

    ray_head.stop(head)
    assert not head.alive() and not ray_head.listening(head.port)
