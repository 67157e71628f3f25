"""Robustness floors, asserted in CI: the real pipeline (`dvc repro` on 30,000 MNIST training digits, the
champion's own recipe, robust_fast, on a smaller slice of the data: conf/experiment/robustness_ci.yaml) registers a champion; the robustness
suite's conditions (testkit/uploads.py), at a smaller sample, go through the real app with it. A
regression in decoding, normalising, segmenting, training or rejection fails here, not only in the full
benchmark. The floors are conf/targets.yaml's `robustness_ci` (tuning/ci_floors.py measures them), not the
champion's targets: this model trains on half the data."""
import json

import numpy as np
import pytest

from serve import create_app
from serve.config import Settings
from digits.contract import READER_NAME
from serve.model import Registry
from testkit import robustness as rb, targets, uploads
from testkit.project import run_pipeline

pytestmark = pytest.mark.pipeline
FLOORS = targets("robustness_ci")
# The rows measured here with the digit model alone (/read cutting numbers); the number reader's rows
# (issue 30) are READER_NAMES, measured again with the CI pipeline's reader; number_long is left out.
NAMES = [*uploads.CONDITIONS, "number", "number_touching", *uploads.NON_DIGITS]
READER_NAMES = ["number", "number_touching", "number_overlapping", "read_single_digit", "read_non_digits"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, mnist_dir):
    root = tmp_path_factory.mktemp("robust")
    run_pipeline(root, mnist_dir, "+experiment=robustness_ci")
    return root


@pytest.fixture(scope="module")
def rows(pipeline):
    champion = Registry(tracking_uri=f"sqlite:///{pipeline}/mlruns/mlflow.db").load()
    assert champion.tags["variant"] == "robust_fast" and champion.tags["classes"].endswith("not_a_digit")
    client = create_app(champion, Settings(model_poll_seconds=0)).test_client()
    test = np.load(pipeline / "data/prepared/test.npz")
    rows = rb.evaluate(client, test["x"], test["y"], FLOORS["n"], 0, NAMES)  # each seeded: the same images every run
    print("\n" + rb.table(rows, FLOORS))
    return {row.condition: row for row in rows}


@pytest.fixture(scope="module")
def reader_rows(pipeline):
    """The same suite's numbers through /read with the pipeline's own number reader (digits-reader@champion,
    verified and self-tested as a server loads it)."""
    uri = f"sqlite:///{pipeline}/mlruns/mlflow.db"
    champion, reader = Registry(tracking_uri=uri).load(), Registry(READER_NAME, tracking_uri=uri, kind="reader").load()
    client = create_app(champion, Settings(model_poll_seconds=0), reader=reader).test_client()
    test = np.load(pipeline / "data/prepared/test.npz")
    rows = rb.evaluate(client, test["x"], test["y"], FLOORS["n"], 0, READER_NAMES)
    print("\n" + rb.table(rows, FLOORS))
    return {row.condition: row for row in rows}


def test_the_number_reader_reads_numbers_touching_or_not(reader_rows):
    for name, floor in (("number", "reader_number"), ("number_touching", "reader_touching"),
                        ("number_overlapping", "reader_touching"), ("read_single_digit", "reader_single_digit")):
        assert reader_rows[name].value >= FLOORS[floor], reader_rows[name]
    assert reader_rows["read_non_digits"].value >= FLOORS["reader_non_digit"], reader_rows["read_non_digits"]


def test_the_champion_was_chosen_and_calibrated_on_validation_data(pipeline):
    metrics = json.loads((pipeline / "reports/robust_fast/metrics.json").read_text())
    assert metrics["val_non_digits_rejected"] >= FLOORS["val_non_digits"]
    assert metrics["temperature"] > 0 and 0 < metrics["rejection_threshold"] < 1


@pytest.mark.parametrize("condition", list(uploads.CONDITIONS))
def test_single_digits(rows, condition):
    floor = FLOORS["field" if condition in uploads.FIELD else "digit"]
    assert rows[condition].value >= floor, rows[condition]


def test_mnist_s_own_pngs_pass_through(rows):
    assert rows[rb.PASS_THROUGH].value >= rows["mnist_arrays"].value - FLOORS["mnist_png_gap"]


def test_written_numbers(rows):
    assert rows["number"].value >= FLOORS["number"], rows["number"]


def test_non_digits_are_rejected_and_digits_are_not(rows):
    assert rows["ALL non-digits"].value >= FLOORS["non_digit"], rows["ALL non-digits"]
    assert rows["ALL real digits"].value < FLOORS["digit_rejection"], rows["ALL real digits"]
