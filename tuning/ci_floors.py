"""How far apart trainings of the robustness-CI model land: the figures behind the CI floors in
conf/targets.yaml `robustness_ci`, which tests/e2e/test_robustness_targets.py asserts. Rerun it when that
model's recipe (conf/experiment/robustness_ci.yaml) or the data it draws changes, and set each floor a
little under the lowest run.

    MNIST_DIR=DIR python tuning/ci_floors.py --runs 5        # one after another
    MNIST_DIR=DIR python tuning/ci_floors.py --runs 2 &  MNIST_DIR=DIR python tuning/ci_floors.py --runs 2
                                                             # two at a time, as make test runs them

Each run copies the repository into a fresh temporary directory and runs that test's real pipeline
(`dvc repro` with +experiment=robustness_ci, as its fixture does), then prints the trained model's
held-out non-digits rejected on validation and the robustness table at the test's images per condition.
TensorFlow on CPU does not train the same model twice, so the runs differ. MNIST_DIR names a directory
holding mnist.pkl.gz (pipeline/download.py's first source).
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from serve import create_app
from serve.config import Settings
from serve.model import Registry
from testkit import ROOT, robustness as rb, targets
from testkit.project import run_pipeline

PIPELINE = ("+experiment=robustness_ci",)  # what the test's fixture composes, and only that


def main():
    conf = yaml.safe_load((ROOT / "conf" / "tuning.yaml").read_text())["ci_floors"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=conf["runs"])
    args = parser.parse_args()
    mnist_dir, floors = Path(os.environ["MNIST_DIR"]), targets("robustness_ci")
    for k in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="ci-model-") as folder:
            root, started = Path(folder), time.perf_counter()
            run_pipeline(root, mnist_dir, *PIPELINE)
            metrics = json.loads((root / "reports/robust_fast/metrics.json").read_text())
            champion = Registry(tracking_uri=f"sqlite:///{root}/mlruns/mlflow.db").load()
            client = create_app(champion, Settings(model_poll_seconds=0)).test_client()
            test = np.load(root / "data/prepared/test.npz")
            rows = rb.evaluate(client, test["x"], test["y"], floors["n"], 0)
            print(f"run {k + 1} of {args.runs}, {time.perf_counter() - started:.0f} s: held-out non-digits rejected "
                  f"on validation {metrics['val_non_digits_rejected']:.1%} (floor {floors['val_non_digits']:.0%})",
                  flush=True)
            print(rb.table(rows, floors) + "\n", flush=True)


if __name__ == "__main__":
    main()
