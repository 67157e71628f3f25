"""How far apart trainings of the robustness-CI model land: the figures behind the floors in
tests/test_robustness_targets.py.

    python benchmarks/ci_model_spread.py --runs 5        # one after another
    python benchmarks/ci_model_spread.py --runs 2 &  python benchmarks/ci_model_spread.py --runs 2   # two at a time, as make test runs

Each run copies the repository into a fresh temporary directory and runs that test's real pipeline
(`dvc repro` with +experiment=robustness_ci, as its fixture does), then prints the trained model's
held-out non-digits rejected on validation and benchmarks/robustness.py's conditions at the test's
100 per condition. TensorFlow on CPU does not train the same model twice, so the runs differ.
MNIST_DIR names a directory with mnist.pkl.gz (tests/conftest.py).
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks import robustness as rb  # noqa: E402
from conftest import run_pipeline  # noqa: E402
from serve import create_app  # noqa: E402
from serve.config import Settings  # noqa: E402
from serve.model import Registry  # noqa: E402
from test_robustness_targets import N, PIPELINE_OVERRIDES  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    mnist_dir = Path(os.environ["MNIST_DIR"])
    for k in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="ci-model-") as folder:
            root, started = Path(folder), time.perf_counter()
            run_pipeline(root, mnist_dir, *PIPELINE_OVERRIDES)
            metrics = json.loads((root / "reports/robust_long/metrics.json").read_text())
            champion = Registry(tracking_uri=f"sqlite:///{root}/mlruns/mlflow.db").load()
            client = create_app(champion, Settings(model_poll_seconds=0)).test_client()
            test = np.load(root / "data/prepared/test.npz")
            rows = rb.evaluate(client, N, 0, None, test["x"], test["y"])
            print(f"run {k + 1} of {args.runs}, {time.perf_counter() - started:.0f} s: held-out non-digits rejected on "
                  f"validation {metrics['val_non_digits_rejected']:.1%}", flush=True)
            print(rb.table(rows) + "\n", flush=True)


if __name__ == "__main__":
    main()
