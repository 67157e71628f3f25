"""Robustness floors, asserted in CI: the real pipeline (`dvc repro` on 30,000 MNIST training digits, one
quick real-upload variant: conf/experiment/robustness_ci.yaml) registers a champion; benchmarks/robustness.py's
conditions, at a smaller sample, go through the real app with it. A regression in decoding, normalising,
segmenting, training or rejection fails here, not only in the full benchmark.

The floors are not issue #4's targets. This model trains in minutes (3 epochs of the `fast` network), and
issue #4's targets are for the champion (the variant the default pipeline registers, now `ensemble_long`),
measured by the full benchmark in docs/robustness.md, which still misses some of them. Each floor sits a
little under the lowest this CI model reached in 14 trainings (2026-11-27: benchmarks/ci_model_spread.py,
one at a time and two at a time as `make test` runs them; TensorFlow on CPU does not train the same model
twice): every single-digit condition 96-100% (in the 13 whose rows were kept), numbers 94-96%,
non-digits rejected 88.6-92.4%, real digits rejected 0.1-0.4%, held-out non-digits rejected on
validation 78.7-83.5% (77.7% and 80.3% in two fresh-clone CI runs). A broken decoder, normaliser or
rejection drops a condition far below."""
import json

import numpy as np
import pytest

from benchmarks import robustness as rb
from conftest import run_pipeline
from serve import create_app
from serve.config import Settings
from serve.model import Registry

N = 100  # per condition, each seeded: the same images every run
PIPELINE_OVERRIDES = ("+experiment=robustness_ci", "~variants.dense", "~variants.cnn", "~variants.strong")
SINGLE_DIGIT_FLOOR, NUMBER_FLOOR, NON_DIGIT_FLOOR, DIGIT_REJECTION_CEILING = 0.95, 0.90, 0.86, 0.02
# NON_DIGIT_FLOOR was 0.88 until 2026-11-27: one of 14 trainings rejected 88.6%, on it.
VAL_NON_DIGIT_FLOOR = 0.75  # was 0.8: harder held-out non-digits (c4192e9) put this model's 77.7-83.5% across it


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, mnist_dir):
    root = tmp_path_factory.mktemp("robust")
    run_pipeline(root, mnist_dir, *PIPELINE_OVERRIDES)
    return root


@pytest.fixture(scope="module")
def rows(pipeline):
    champion = Registry(tracking_uri=f"sqlite:///{pipeline}/mlruns/mlflow.db").load()
    assert champion.tags["variant"] == "robust_long" and champion.tags["classes"].endswith("not_a_digit")
    client = create_app(champion, Settings(model_poll_seconds=0)).test_client()
    test = np.load(pipeline / "data/prepared/test.npz")
    rows = rb.evaluate(client, N, 0, None, test["x"], test["y"])
    print("\n" + rb.table(rows))
    return {row.condition: row for row in rows}


def test_the_champion_was_chosen_and_calibrated_on_validation_data(pipeline):
    metrics = json.loads((pipeline / "reports/robust_long/metrics.json").read_text())
    assert metrics["val_non_digits_rejected"] >= VAL_NON_DIGIT_FLOOR
    assert metrics["temperature"] > 0 and 0 < metrics["rejection_threshold"] < 1


@pytest.mark.parametrize("condition", list(rb.CONDITIONS))
def test_single_digits(rows, condition):
    assert rows[condition].value >= SINGLE_DIGIT_FLOOR, rows[condition]


def test_written_numbers(rows):
    assert rows["number"].value >= NUMBER_FLOOR, rows["number"]


def test_non_digits_are_rejected_and_digits_are_not(rows):
    assert rows["ALL non-digits"].value >= NON_DIGIT_FLOOR, rows["ALL non-digits"]
    assert rows["ALL real digits"].value < DIGIT_REJECTION_CEILING, rows["ALL real digits"]
