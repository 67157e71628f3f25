"""What a variant trains on: MNIST's training split plus, when it says so, users' reviewed corrections
(pipeline/corrections.py's export) with their labels; "not a digit" ones only for a variant with that
class; validation stays MNIST's. And `reads`, the DVC dep, must cover what it learns from."""
import numpy as np
import pytest

from pipeline import corrections, negatives, preprocess, train
from pipeline.params import compose_params, model_config


@pytest.fixture
def data(tmp_path, monkeypatch, digits):
    """A project's data/ in tmp_path: 20 training and 10 validation digits, 5 non-digits a split, and an
    export of 6 corrections (train: 4, two of them "not a digit"; held out: 2)."""
    monkeypatch.chdir(tmp_path)
    x, y = digits
    preprocess.OUT_DIR.mkdir(parents=True)
    np.savez_compressed(preprocess.OUT_DIR / "train.npz", x=x[:20], y=y[:20])
    np.savez_compressed(preprocess.OUT_DIR / "val.npz", x=x[20:], y=y[20:])
    negatives.OUT_DIR.mkdir(parents=True)
    for split in ("train", "val"):
        np.save(negatives.OUT_DIR / f"{split}.npy", np.full((5, 28, 28), 9, np.uint8))
    corrections.OUT_DIR.mkdir(parents=True)
    taken = {"train": (np.stack([x[0], x[1], np.zeros((28, 28), np.uint8), np.ones((28, 28), np.uint8)]),
                       np.array([4, 5, 10, 10])),
             "heldout": (x[2:4], np.array([7, 10]))}
    for name, (images, labels) in taken.items():
        np.save(corrections.OUT_DIR / f"{name}.npy", images.astype(np.uint8))
        np.save(corrections.OUT_DIR / f"{name}_labels.npy", labels.astype(np.int64))
    return x, y


def variant(**changes):
    return {**model_config("dense"), **changes}


def test_a_ten_class_variant_adds_the_corrected_digits_with_their_labels(data):
    x, y = data
    (x_train, y_train), (x_val, y_val) = train.training_data(variant(corrections=True))
    assert len(y_train) == 22 and y_train.dtype == y.dtype
    assert np.array_equal(x_train[:20], x[:20]) and np.array_equal(y_train[:20], y[:20])
    assert np.array_equal(x_train[20:], x[:2]) and y_train[20:].tolist() == [4, 5]  # the users' labels, not MNIST's
    assert np.array_equal(x_val, x[20:]) and np.array_equal(y_val, y[20:])


def test_a_reject_variant_also_learns_the_corrections_that_are_not_digits(data):
    x, y = data
    (x_train, y_train), (_, y_val) = train.training_data(variant(corrections=True, reject=True))
    assert len(y_train) == 20 + 4 + 5 and y_train[20:24].tolist() == [4, 5, 10, 10]
    assert (y_train[24:] == 10).all() and len(y_val) == 10 + 5  # the generated non-digits as before


def test_without_the_option_nothing_is_added(data):
    (_, y_train), _ = train.training_data(variant())
    assert len(y_train) == 20


def test_reads_must_cover_what_a_variant_learns_from():
    assert train.learns_from(variant()) == []
    assert [str(p) for p in train.learns_from(variant(corrections=True))] == ["data/corrections"]
    both = variant(corrections=True, uploads=True, reads="data/drawn")
    assert [str(p) for p in train.learns_from(both)] == ["data/drawn", "data/corrections"]
    assert "set variants.v.reads=data," in train.reads_problem("v", both)
    assert train.reads_problem("v", {**both, "reads": "data"}) is None
    assert "reads=data/corrections," in train.reads_problem("v", variant(corrections=True))
    assert train.reads_problem("v", variant(corrections=True, reads="data/corrections")) is None
    for profile in ([], ["+experiment=smoke"], ["+experiment=full"]):  # every variant the repository trains
        for name, v in compose_params(profile)["variants"].items():
            assert train.reads_problem(name, v) is None
