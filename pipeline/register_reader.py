"""Stage `register_reader`: register the number reader as digits-reader, check it, move its `candidate`.

    python -m pipeline.register_reader

The reader's training run logged model.onnx as an MLflow ONNX model (pipeline/reader.py); this registers
it under its own name (digits.contract.READER_NAME), downloads it back and checks its sha256 against the
trained file, then tags the version with its metrics (reports/reader/metrics.json), rejection threshold,
contract, config and sha256, and only then moves the alias `candidate` (never `champion`: the promote
stage, ops/gate.py, moves that when the candidate is at least as good). Servers follow digits-reader@champion
as they follow digits@champion: they download, verify the sha256, self-test it on known numbers and swap it in.
Writes champion/reader.json.
"""
import json
from pathlib import Path

from digits import line as lines
from digits.contract import CANDIDATE, READER_NAME
from pipeline import tracking
from pipeline.params import load
from pipeline.register import RegisterError, finished_run, publish, verified_version

RUN, METRICS, OUT = Path("models/reader/run.json"), Path("reports/reader/metrics.json"), Path("champion/reader.json")
TAGGED = ("val_exact", "val_exact_touching", "val_exact_overlapping", "val_non_numbers_rejected", "val_per_digit",
          "test_exact", "test_exact_touching", "test_exact_overlapping", "latency_ms_6_digits")


def register(run, result, params):
    mlflow = tracking.setup()
    client = mlflow.MlflowClient()
    finished_run(mlflow, client, run["run_id"], "the number reader", "reader")
    version = verified_version(mlflow, client, READER_NAME, run["run_id"], run["model_uri"], run["onnx_sha256"],
                               {"run_id": run["run_id"]})
    digest = run["onnx_sha256"]  # what the registry holds: checked by verified_version
    tags = {"kind": "reader", "run_id": run["run_id"], "variant": "reader",
            **{k: f"{result[k]:.6f}" for k in TAGGED if result.get(k) is not None},
            "rejection_threshold": f"{result['rejection_threshold']:.6f}", "temperature": "1.0",
            "classes": ",".join(run["class_names"]), "input": lines.INPUT, "output": lines.OUTPUT,
            "config": json.dumps({"seed": params["seed"], **params["reader"]}, sort_keys=True),
            "git_commit": tracking.git_commit(),
            "model_sha256": digest}  # last: a version killed mid-tagging is never served
    publish(client, READER_NAME, version, tags, f"number reader: validation strings {result['val_exact']:.2%} exact, "
                                                f"test strings {result['test_exact']:.2%}")
    return version.version


def main():
    run, result = json.loads(RUN.read_text()), json.loads(METRICS.read_text())
    try:
        version = register(run, result, load())
    except RegisterError as e:
        raise SystemExit(f"register_reader: {e}")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"name": READER_NAME, "version": str(version), "alias": CANDIDATE, "run_id": run["run_id"],
                               "onnx_sha256": run["onnx_sha256"], **result}, indent=2, sort_keys=True) + "\n")
    print(f"register_reader: {READER_NAME} version {version} is {READER_NAME}@{CANDIDATE} "
          f"(validation strings {result['val_exact']:.2%} exact, test strings {result['test_exact']:.2%})")


if __name__ == "__main__":
    main()
