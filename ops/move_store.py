"""Move a local MLflow store to a team's tracking server:
`python -m ops.move_store --from sqlite:///mlruns/mlflow.db --to http://127.0.0.1:5000`.

Copies every experiment (by name) with its tags, every run (name, times, status, params, the full history
of each metric with its steps and timestamps, tags, artifacts), and the model registry: registered models
with their tags and description, each version with its tags and description, and every alias. MLflow 3
registers LoggedModels (`models:/m-...`), which live outside the run's artifacts: each version's files
(`models:/NAME/VERSION`) are copied under its moved run, in `registry/NAME/vVERSION`, and registered from
there, so the server holds everything it serves. model_sha256 is set last, as the pipeline does (a version
without it is never served), and `source_version` of an INT8 copy, the `run_id` tag and the version numbers
in `champion_history` (ops/promote.py: what a rollback reads) are renumbered to the target's. An alias is set
only where the target lacks it: a second move never moves the target's champion (there only the gate and
ops.promote move it, checked and recorded). Deleted experiments, runs and versions stay behind.

Idempotent: a moved run carries `moved_from_run_id` (and `moved=complete` once whole; an incomplete one is
deleted and copied again), a moved version `moved_from_version`, so a second move copies only what is new.
A registered model that exists on the target and did not come from this store (its `moved_from` tag) is
refused, before anything is written, unless --merge: this store's versions are then added with new numbers,
and only the aliases the target lacks are set (its champion stays its own). Reports what moved.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from digits.contract import INT8_SUFFIX
from ops.promote import HISTORY

CHUNK = 900  # MLflow's log_batch takes at most 1000 metrics (100 params, 100 tags) a call
RUN_TAG, DONE_TAG, VERSION_TAG, MODEL_TAG = "moved_from_run_id", "moved", "moved_from_version", "moved_from"
ORPHANS = "moved-registry"  # the experiment holding versions whose run is gone from the source


class MoveError(RuntimeError):
    """The move cannot go on; the message says why and what to do."""


def store_id(uri) -> str:
    """The source store's identity, for the `moved_from` tag: a SQLite file by its absolute path."""
    if uri.startswith("sqlite:///"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


class Move:
    def __init__(self, source, target, merge=False, log=print):
        from mlflow import MlflowClient

        self.source_uri, self.target_uri, self.merge, self.log = source, target, merge, log
        self.src, self.dst = MlflowClient(source, source), MlflowClient(target, target)
        self.runs, self.versions = {}, {}  # source run id -> target run id; (name, source version) -> target version
        self.moved = {"experiments": 0, "runs": 0, "runs_skipped": 0, "versions": 0, "versions_skipped": 0, "aliases": 0}

    # --- experiments and runs -------------------------------------------------------------------------
    def experiment(self, name, tags=None) -> str:
        found = self.dst.get_experiment_by_name(name)
        if found is None:
            self.moved["experiments"] += 1
            return self.dst.create_experiment(name, tags=tags or {})  # artifacts: the server's (proxied)
        if found.lifecycle_stage == "deleted":
            raise MoveError(f"experiment {name!r} is deleted on the target: restore it there, or delete it for good")
        for key, value in (tags or {}).items():
            self.dst.set_experiment_tag(found.experiment_id, key, value)
        return found.experiment_id

    def move_runs(self):
        from mlflow.entities import ViewType

        for experiment in self.src.search_experiments(view_type=ViewType.ACTIVE_ONLY):
            tags = {k: v for k, v in experiment.tags.items() if not k.startswith("mlflow.")}
            target = self.experiment(experiment.name, tags)
            runs = self.src.search_runs([experiment.experiment_id], run_view_type=ViewType.ACTIVE_ONLY,
                                        max_results=50000, order_by=["attributes.start_time ASC"])
            for run in runs:
                self.move_run(run, target)

    def move_run(self, run, experiment_id):
        source_id = run.info.run_id
        for found in self.dst.search_runs([experiment_id], f"tags.{RUN_TAG} = '{source_id}'"):
            if found.data.tags.get(DONE_TAG) == "complete":
                self.runs[source_id] = found.info.run_id
                self.moved["runs_skipped"] += 1
                return
            self.dst.delete_run(found.info.run_id)  # an earlier move stopped half-way: copy it again
        from mlflow.entities import Metric, Param, RunTag

        tags = {k: v for k, v in run.data.tags.items() if k not in (RUN_TAG, DONE_TAG, "mlflow.parentRunId")}
        if run.data.tags.get("mlflow.parentRunId") in self.runs:
            tags["mlflow.parentRunId"] = self.runs[run.data.tags["mlflow.parentRunId"]]
        created = self.dst.create_run(experiment_id, start_time=run.info.start_time, run_name=run.info.run_name,
                                      tags={**tags, RUN_TAG: source_id})
        target = created.info.run_id
        params = [Param(k, v) for k, v in run.data.params.items()]
        for i in range(0, len(params), 100):
            self.dst.log_batch(target, params=params[i:i + 100])
        metrics = [Metric(m.key, m.value, m.timestamp, m.step)
                   for key in run.data.metrics for m in self.src.get_metric_history(source_id, key)]
        for i in range(0, len(metrics), CHUNK):
            self.dst.log_batch(target, metrics=metrics[i:i + CHUNK])
        if self.src.list_artifacts(source_id):
            with tempfile.TemporaryDirectory() as tmp:
                folder = self.src.download_artifacts(source_id, "", tmp)
                self.dst.log_artifacts(target, folder)
        if run.info.status != "RUNNING":
            self.dst.set_terminated(target, run.info.status, end_time=run.info.end_time)
        self.dst.set_tag(target, DONE_TAG, "complete")  # last: a move cut off before it copies this run again
        self.runs[source_id] = target
        self.moved["runs"] += 1
        self.log(f"run {run.info.run_name} {source_id} -> {target}")

    # --- the registry ---------------------------------------------------------------------------------
    def registered_models(self):
        models = self.src.search_registered_models(max_results=1000)
        return sorted(models, key=lambda m: (m.name.endswith(INT8_SUFFIX), m.name))  # floats first: INT8 tags name them

    def check_targets(self, models):
        """Before anything is written: refuse a target model of the same name that is not this store's."""
        me = store_id(self.source_uri)
        for model in models:
            found = self.dst.search_registered_models(f"name = '{model.name}'")
            if found and found[0].tags.get(MODEL_TAG) != me and not self.merge:
                raise MoveError(f"the target already has a registered model {model.name!r} that did not come from "
                                f"{me} (its {MODEL_TAG} tag: {found[0].tags.get(MODEL_TAG)!r}); nothing was moved. "
                                "--merge adds this store's versions to it (new numbers) and sets only the aliases it lacks")

    def move_registry(self, models):
        me = store_id(self.source_uri)
        for model in models:
            found = self.dst.search_registered_models(f"name = '{model.name}'")
            foreign = bool(found) and found[0].tags.get(MODEL_TAG) != me  # only with --merge (check_targets)
            if not found:  # its champion_history is set below, once its versions have their target numbers
                self.dst.create_registered_model(model.name, tags={**{k: v for k, v in model.tags.items()
                                                                      if k != HISTORY}, MODEL_TAG: me},
                                                 description=model.description)
            elif model.description and not foreign:
                self.dst.update_registered_model(model.name, description=model.description)
            existing = {v.tags.get(VERSION_TAG): v for v in self.dst.search_model_versions(f"name = '{model.name}'")
                        if v.tags.get(VERSION_TAG) and v.tags.get(MODEL_TAG) == me}
            versions = sorted(self.src.search_model_versions(f"name = '{model.name}'"), key=lambda v: int(v.version))
            for version in versions:
                done = existing.get(str(version.version))
                if done is not None and done.tags.get("model_sha256") == version.tags.get("model_sha256"):
                    self.versions[(model.name, str(version.version))] = str(done.version)
                    self.moved["versions_skipped"] += 1
                    continue
                if done is not None:  # an earlier move stopped before its model_sha256: never served, redo it
                    self.dst.delete_model_version(model.name, done.version)
                self.versions[(model.name, str(version.version))] = self.move_version(model.name, version, me)
            # An alias the target has is never moved: on the target, champion moves only through the gate or
            # ops.promote (checked and recorded); a second move must not undo that with this store's.
            kept = {k: str(v) for k, v in self.dst.get_registered_model(model.name).aliases.items()} if found else {}
            for alias, number in model.aliases.items():
                target = self.versions.get((model.name, str(number)))
                if alias in kept:
                    if kept[alias] != target:
                        self.log(f"alias {model.name}@{alias} kept at the target's version {kept[alias]} "
                                 f"(this store's is its version {target})")
                elif target is not None:
                    self.dst.set_registered_model_alias(model.name, alias, target)
                    self.moved["aliases"] += 1
                    self.log(f"alias {model.name}@{alias} -> version {target}")
            if not foreign and HISTORY in model.tags and HISTORY not in (found[0].tags if found else {}):
                self.dst.set_registered_model_tag(model.name, HISTORY, self.history(model.name, model.tags[HISTORY]))

    def history(self, name, text) -> str:
        """This store's champion_history (ops/promote.py) with the target's version numbers, so that a rollback
        on the target goes where it went here; a move to a version that stayed behind is left out."""
        try:
            entries = json.loads(text)
        except ValueError:
            return "[]"
        moved = []
        for entry in entries if isinstance(entries, list) else []:
            to = self.versions.get((name, str(entry.get("to"))))
            if to is not None:
                before = entry.get("from")
                moved.append({**entry, "to": to, "from": before and self.versions.get((name, str(before)))})
        return json.dumps(moved)

    def move_version(self, name, version, me) -> str:
        """Copy a version's files under its moved run and register them there; tags, model_sha256 last."""
        run_id = self.runs.get(version.run_id) or self.orphan_run(name, version)
        path = f"registry/{name}/v{version.version}"
        with tempfile.TemporaryDirectory() as tmp:
            import mlflow

            files = self.src.get_model_version_download_uri(name, version.version)  # a LoggedModel's folder too
            folder = mlflow.artifacts.download_artifacts(artifact_uri=files, dst_path=tmp, tracking_uri=self.source_uri)
            self.dst.log_artifacts(run_id, folder, path)
        source = f"{self.dst.get_run(run_id).info.artifact_uri}/{path}"
        created = self.dst.create_model_version(name, source, run_id, description=version.description,
                                                tags={VERSION_TAG: str(version.version), MODEL_TAG: me})
        for _ in range(60):
            if self.dst.get_model_version(name, created.version).status == "READY":
                break
            time.sleep(1)
        tags = dict(version.tags)
        if tags.get("run_id") in self.runs:
            tags["run_id"] = self.runs[tags["run_id"]]
        base = name[:-len(INT8_SUFFIX)] if name.endswith(INT8_SUFFIX) else None
        if base and (base, tags.get("source_version")) in self.versions:
            tags["source_version"] = self.versions[(base, tags["source_version"])]
        digest = tags.pop("model_sha256", None)
        for key, value in tags.items():
            self.dst.set_model_version_tag(name, created.version, key, value)
        if digest is not None:
            self.dst.set_model_version_tag(name, created.version, "model_sha256", digest)
        self.moved["versions"] += 1
        self.log(f"version {name}/{version.version} -> {name}/{created.version}")
        return str(created.version)

    def orphan_run(self, name, version) -> str:
        """A run to hold a version whose source run was not moved (deleted there, or none)."""
        experiment = self.experiment(ORPHANS)
        key = f"{name}/{version.version}"
        for found in self.dst.search_runs([experiment], f"tags.{RUN_TAG} = '{key}'"):
            return found.info.run_id
        run = self.dst.create_run(experiment, run_name=key, tags={RUN_TAG: key, DONE_TAG: "complete"})
        self.dst.set_terminated(run.info.run_id)
        return run.info.run_id

    def __call__(self) -> dict:
        models = self.registered_models()
        self.check_targets(models)
        self.move_runs()
        self.move_registry(models)
        return self.moved


def move(source, target, merge=False, log=print) -> dict:
    """Move the store at `source` to the tracking server at `target` -> counts of what moved and was skipped."""
    return Move(source, target, merge, log)()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ops.move_store", description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", default="sqlite:///mlruns/mlflow.db", help="the local store")
    parser.add_argument("--to", dest="target", default=os.environ.get("MLFLOW_TRACKING_URI"),
                        help="the tracking server (default: MLFLOW_TRACKING_URI)")
    parser.add_argument("--merge", action="store_true",
                        help="add versions to target models of the same name that came from elsewhere")
    args = parser.parse_args(argv)
    if not args.target or not args.target.startswith("http"):
        raise SystemExit("move_store: --to http://HOST:PORT, the tracking server (python -m ops.tracking_server)")
    if args.source.startswith("sqlite:///") and not Path(args.source[len("sqlite:///"):]).is_file():
        raise SystemExit(f"move_store: no store at {args.source}")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        moved = move(args.source, args.target, args.merge)
    except MoveError as e:
        raise SystemExit(f"move_store: {e}")
    print("move_store: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in moved.items()), file=sys.stderr)


if __name__ == "__main__":
    main()
