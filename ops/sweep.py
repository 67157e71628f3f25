"""Hyperparameter sweeps on Ray Tune: many trainings of one variant at once, one CPU each, the best written
back as a Hydra experiment that `dvc exp run` reproduces.

    python -m ops.sweep                                   # conf/sweep/default.yaml: robust_fast, 8 trials
    python -m ops.sweep --variant cnn --trials 16 --name cnn_lr --set 'sweep.space.train.epochs={choice:[4]}'
    RAY_ADDRESS=10.0.0.5:6380 python -m ops.sweep ...     # an existing cluster (or --address, ray://...)

Each trial trains the variant with pipeline/train.py's own code (fit_members, its EpochLog) on the data the
train stage reads (data/prepared, data/drawn, data/corrections as the variant learns from them), loaded once
here and shipped through Ray's object store, with the trial's sampled values put into the variant's config.
A trial is one Ray task of `cpus_per_trial` CPUs, TensorFlow's math on that many threads (threads()); it reports validation
accuracy after every epoch to the scheduler (ASHA stops the worse half at each rung) and logs to
MLFLOW_TRACKING_URI as a child run of the sweep's parent run in the experiment `digits-sweep-<name>`
(params, per-epoch metrics as train logs them). A sweep registers no model and moves no alias.

With neither --address nor RAY_ADDRESS it starts a private head on 127.0.0.1 (ops/ray_head.py) with this
machine's CPUs, or --local-cpus, and stops it after. The best trial becomes conf/experiment/sweep_<name>.yaml,
checked to compose into exactly the trial's params; the commands that reproduce it are printed.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ops import ray_head
from ops.sweep_conf import (NAME, apply, check_space, experiment_file, plain, sweep_params, tune_space,
                            with_variant, write_override)

OPS = str(Path(__file__).resolve().parent)  # shipped to the workers: a cluster's image may predate ops/
CONF_DIR = Path("conf")  # the project's, relative like every stage's paths: run from the project's root
# A trial's math on its `cpus_per_trial` threads (one by default). Not fewer than 2 in the inter-op pool: at 1
# the input pipeline (tf.data) and the training step take turns on it, and an epoch took twice the wall time
# for the same CPU time (measured: 20,000 digits of the cnn, 23.1 s against 12.6 s at 2, 6.1 s of CPU either way).
def threads(cpus: int) -> dict:
    """The environment that holds TensorFlow's (and any BLAS's) math to `cpus` threads in a trial's process."""
    cpus = max(1, int(cpus))
    return {**{var: str(cpus) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                          "TF_NUM_INTRAOP_THREADS")}, "TF_NUM_INTEROP_THREADS": str(max(2, cpus))}


def hold_threads(cpus: int):
    """This process's math on `cpus` threads: a trial owns `cpus_per_trial` CPUs and uses no more."""
    env = threads(cpus)
    os.environ.update(env)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(env["TF_NUM_INTRAOP_THREADS"]))
        tf.config.threading.set_inter_op_parallelism_threads(int(env["TF_NUM_INTEROP_THREADS"]))
    except RuntimeError:  # TensorFlow already ran an op in this worker: the env vars above held from its start
        pass


class Reporter:
    """What fit's EpochLog takes as `mlflow`: each epoch's metrics go to the trial's MLflow run and, their
    epoch_ prefix dropped, to Ray Tune, whose scheduler may stop the trial there."""

    def __init__(self, mlflow):
        self.mlflow = mlflow

    def log_metrics(self, metrics, step=None):
        from ray import tune

        self.mlflow.log_metrics(metrics, step=step)
        tune.report({**{k.removeprefix("epoch_"): v for k, v in metrics.items()}, "epoch": step})


def trial(sampled, *, variant, name, seed, data, run, cpus=1):
    """One trial (a Ray Tune function trainable): the variant with the sampled values, trained as train@ does."""
    hold_threads(cpus)
    import mlflow
    from ray import tune

    from pipeline import tracking
    from pipeline.train import fit_members

    cfg = apply(variant, sampled)
    trial_id = tune.get_context().get_trial_id()
    mlflow.set_tracking_uri(run["uri"])
    tags = {"mlflow.parentRunId": run["parent"], "sweep": run["sweep"], "trial_id": trial_id, "variant": name,
            "stage": "sweep-trial", "git_commit": run["git_commit"], "data_sha256": run["data_sha256"],
            "sampled": json.dumps(plain(sampled)), **tracking.process_tags()}
    with mlflow.start_run(experiment_id=run["experiment_id"], run_name=f"{run['sweep']}-{trial_id}", tags=tags):
        mlflow.log_params(tracking.flatten({"seed": seed, **cfg}))
        started = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                _, best, details = fit_members(cfg, seed, *data, Path(tmp) / "history.csv", Reporter(mlflow),
                                               name=f"{name} {trial_id}")
        except SystemExit:  # the scheduler stopped it: tune.report ends a stopped trial's thread with sys.exit
            mlflow.set_tag("stopped_early", "true")
            mlflow.end_run("FINISHED")
            raise
        mlflow.log_metrics({"best_val_accuracy": best, **details, "train_seconds": time.perf_counter() - started})


def absolute_uri(uri) -> str:
    """A relative SQLite URI (the default sqlite:///mlruns/mlflow.db) made absolute: Ray's workers run
    elsewhere (their own working directory), and must log into the same file."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def setup_tracking(experiment):
    """MLflow at pipeline.tracking's URI, the sweep's own experiment created. -> (mlflow, uri, experiment id)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    from pipeline import tracking

    uri = absolute_uri(tracking.tracking_uri())
    default = uri == absolute_uri(tracking.DEFAULT_URI)
    if default:
        tracking.STORE_DIR.mkdir(exist_ok=True)
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else mlflow.create_experiment(
        experiment, artifact_location=(tracking.STORE_DIR / "artifacts").resolve().as_uri() if default else None)
    return mlflow, uri, experiment_id


def end_trial_runs(mlflow, experiment_id, sweep, results):
    """The trials' runs by trial id, each ended: a trial the scheduler stopped mid-training ends FINISHED,
    tagged stopped_early (its worker may have been ended before its run was); a failed trial's FAILED.
    -> ({trial_id: run_id}, [trial ids stopped early])."""
    failed = {(r.metrics or {}).get("trial_id") for r in results if r.error}
    client = mlflow.MlflowClient()
    runs, stopped = {}, []
    for found in mlflow.search_runs([experiment_id], f"tags.sweep = '{sweep}'", output_format="list"):
        trial_id = found.data.tags.get("trial_id")
        if trial_id is None:
            continue
        runs[trial_id] = found.info.run_id
        if trial_id in failed:
            if found.info.status != "FAILED":
                client.set_terminated(found.info.run_id, "FAILED")
        elif "best_val_accuracy" not in found.data.metrics:  # never reached the end of its training
            stopped.append(trial_id)
            client.set_tag(found.info.run_id, "stopped_early", "true")
            if found.info.status != "FINISHED":
                client.set_terminated(found.info.run_id, "FINISHED")
    return runs, stopped


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ops.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                        help="a Ray cluster: host:port, ray://host:port or auto (default RAY_ADDRESS; "
                             "neither: a private head on 127.0.0.1, stopped after)")
    parser.add_argument("--variant", help="a variant of params or a recipe of conf/model/ (sweep.variant)")
    parser.add_argument("--trials", type=int, help="how many trials (sweep.trials)")
    parser.add_argument("--name", default=time.strftime("%Y%m%d_%H%M%S"),
                        help="the sweep's name: experiment digits-sweep-<name>, conf/experiment/sweep_<name>.yaml")
    parser.add_argument("--set", nargs="+", default=[], metavar="OVERRIDE",
                        help="Hydra overrides of conf/ and conf/sweep/: sweep.scheduler.kind=fifo, "
                             "variants.robust_fast.train.epochs=4, '~sweep.space.train.epochs', ...")
    parser.add_argument("--local-cpus", type=int, help="CPUs of the private head (default: this machine's)")
    parser.add_argument("--summary", help="also write the outcome as JSON here")
    parser.add_argument("--project", default=".", help="the project's root, where conf/ and data/ are read and "
                        "the experiment file written (default: the working directory)")
    args = parser.parse_args(argv)
    if args.summary:
        args.summary = Path(args.summary).resolve()
    os.chdir(args.project)  # every path below is relative to it, as the stages' are
    if not NAME.match(args.name):
        sys.exit(f"sweep: --name {args.name!r}: letters, digits, _ and - only")
    if experiment_file(CONF_DIR, args.name).exists():
        sys.exit(f"sweep: {experiment_file(CONF_DIR, args.name)} exists: choose another --name")
    overrides = [*args.set, *([f"sweep.variant={args.variant}"] if args.variant else []),
                 *([f"sweep.trials={args.trials}"] if args.trials else [])]
    cfg, params = sweep_params(CONF_DIR, overrides)
    name = cfg["variant"]
    params = with_variant(CONF_DIR, params, name, overrides)
    variant = params["variants"][name]
    check_space(cfg["space"], variant)

    from pipeline import tracking
    from pipeline.params import load as load_params
    from pipeline.train import data_sha256, reads_problem, training_data

    if problem := reads_problem(name, variant):
        sys.exit(f"sweep: {problem}")
    data = training_data(variant)  # relative to the working directory, as the train stage reads it
    if Path("params.yaml").exists() and (stale := [k for k, v in load_params().items()
                                                   if k != "variants" and params.get(k) != v]):
        print(f"sweep: warning: params.yaml's {', '.join(stale)} differ from the trials' (conf/ + --set): the "
              f"data on disk was made from params.yaml's; reproducing the best with conf/ will remake it", flush=True)
    print(f"sweep {args.name}: {cfg['trials']} trials of {name}, {len(data[0][1])} training images, "
          f"{len(data[1][1])} validation", flush=True)
    mlflow, uri, experiment_id = setup_tracking(f"{cfg['experiment']}-{args.name}")

    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    head = None if args.address else ray_head.start(args.local_cpus)
    storage = Path(tempfile.mkdtemp(prefix="ray-tune-"))
    try:
        ray.init(address=args.address or head.address, runtime_env={"env_vars": threads(cfg["cpus_per_trial"]), "py_modules": [OPS]},
                 logging_level="WARNING", log_to_driver=True)
        print(f"sweep {args.name}: Ray at {args.address or head.address}, "
              f"{ray.cluster_resources().get('CPU', 0):.0f} CPUs; MLflow {uri}", flush=True)
        epochs = max([variant["train"]["epochs"], *cfg["space"].get("train", {}).get("epochs", {}).get("choice", [])])
        max_t = epochs * variant.get("members", 1) + 1  # never reached: a trial ends its training itself
        scheduler = (ASHAScheduler(max_t=max_t, grace_period=cfg["scheduler"]["grace_period"],
                                   reduction_factor=cfg["scheduler"]["reduction_factor"])
                     if cfg["scheduler"]["kind"] == "asha" else FIFOScheduler())
        provenance = {"git_commit": tracking.git_commit(), "data_sha256": data_sha256()}  # the parent's and every trial's
        with mlflow.start_run(experiment_id=experiment_id, run_name=args.name,
                              tags={"sweep": args.name, "stage": "sweep", "variant": name, **provenance,
                                    "overrides": json.dumps(args.set), **tracking.process_tags()}) as parent:
            mlflow.log_params(tracking.flatten({k: (json.dumps(v) if k == "space" else v) for k, v in cfg.items()}))
            run = {"uri": uri, "experiment_id": experiment_id, "parent": parent.info.run_id, "sweep": args.name,
                   **provenance}
            trainable = tune.with_resources(
                tune.with_parameters(trial, variant=variant, name=name, seed=params["seed"], data=data, run=run,
                                      cpus=cfg["cpus_per_trial"]),
                {"cpu": cfg["cpus_per_trial"]})
            tuner = tune.Tuner(
                trainable, param_space=tune_space(cfg["space"]),
                tune_config=tune.TuneConfig(
                    metric=cfg["metric"], mode=cfg["mode"], num_samples=cfg["trials"], scheduler=scheduler,
                    # max_concurrent here: Tune ignores max_concurrent_trials when given a search_alg like this one
                    search_alg=BasicVariantGenerator(random_state=cfg["seed"], max_concurrent=cfg["max_concurrent"])),
                run_config=tune.RunConfig(name=args.name, storage_path=str(storage), verbose=1))
            started = time.perf_counter()
            results = tuner.fit()
            wall = time.perf_counter() - started
            runs, stopped = end_trial_runs(mlflow, experiment_id, args.name, results)
            if results.num_errors == len(results):
                raise SystemExit(f"sweep: every trial failed; the first: {results.errors[0]}")
            try:
                best = results.get_best_result(cfg["metric"], cfg["mode"], scope="all")
            except RuntimeError:  # Ctrl-C: Tune ends the trials and returns what it has
                raise SystemExit(f"sweep: no trial reported {cfg['metric']}: nothing written") from None
            frame = best.metrics_dataframe
            value = float(frame[cfg["metric"]].max() if cfg["mode"] == "max" else frame[cfg["metric"]].min())
            best_params = {**params, "variants": {**params["variants"], name: apply(variant, best.config)}}
            best_id = best.metrics["trial_id"]
            header = (f"Written by `python -m ops.sweep --name {args.name}`: the best of {len(results)} trials of "
                      f"{name} ({cfg['metric']} {value:.4f},\ntrial {best_id}, MLflow run {runs.get(best_id)} "
                      f"of experiment {cfg['experiment']}-{args.name}). Reproduce it:\n"
                      f"  python -m pipeline.params +experiment=sweep_{args.name} && dvc exp run\n"
                      f"  dvc exp run -S '+experiment=sweep_{args.name}'   # the same in one command")
            path = write_override(CONF_DIR, args.name, {k: v for k, v in best_params.items()}, header)
            trial_seconds = [float(r.metrics_dataframe["time_total_s"].max()) for r in results
                             if r.metrics_dataframe is not None and len(r.metrics_dataframe)]
            mlflow.log_metrics({f"best_{cfg['metric']}": value, "wall_seconds": wall, "trials": len(results),
                                "trial_seconds_sum": sum(trial_seconds), "stopped_early": len(stopped),
                                "failed": results.num_errors})
            mlflow.set_tags({"best_trial": best_id, "best_run_id": runs.get(best_id, ""), "override": str(path)})
            mlflow.log_artifact(str(path))
    finally:
        ray.shutdown()
        if head:
            ray_head.stop(head)
        shutil.rmtree(storage, ignore_errors=True)
    summary = {"name": args.name, "variant": name, "trials": len(results), "failed": results.num_errors,
               "stopped_early": stopped, "wall_seconds": round(wall, 1),
               "trial_seconds_sum": round(sum(trial_seconds), 1), "metric": cfg["metric"], "best_value": value,
               "best_trial": best_id, "best_run_id": runs.get(best_id), "parent_run_id": parent.info.run_id,
               "experiment_id": experiment_id, "best_sampled": plain(best.config), "override": str(path),
               "runs": runs}
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"sweep {args.name}: {len(results)} trials in {wall:.0f}s ({sum(trial_seconds):.0f}s of training), "
          f"{len(stopped)} stopped early, {results.num_errors} failed; best {cfg['metric']} {value:.4f}: trial "
          f"{best_id} {json.dumps(plain(best.config))}\nwrote {path}; reproduce it with\n"
          f"  python -m pipeline.params +experiment=sweep_{args.name}\n  dvc exp run\n"
          f"or in one: dvc exp run -S '+experiment=sweep_{args.name}'  "
          f"(`git add {path}` first for --queue/--temp: they copy only what git sees)")


if __name__ == "__main__":
    main()
