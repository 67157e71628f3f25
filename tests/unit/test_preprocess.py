import numpy as np

from pipeline.preprocess import split


def splits(mnist, seed=0, **kwargs):
    return split(mnist["x_train"], mnist["y_train"], mnist["x_test"], mnist["y_test"],
                 validation_size=kwargs.pop("validation_size", 5000), seed=seed, **kwargs)


def as_set(x):
    return {row.tobytes() for row in x}


def test_validation_is_held_out_from_train_and_test_is_untouched(mnist):
    s = splits(mnist)
    assert len(s["train"][0]) == 55000 and len(s["val"][0]) == 5000 and len(s["test"][0]) == 10000
    # No training image appears in validation (MNIST has a handful of duplicate images; allow them).
    assert len(as_set(s["train"][0]) & as_set(s["val"][0])) <= 5
    assert np.array_equal(s["test"][0], mnist["x_test"]) and np.array_equal(s["test"][1], mnist["y_test"])
    assert s["train"][0].dtype == np.uint8


def test_the_split_is_fixed_by_the_seed(mnist):
    a, b, c = splits(mnist, seed=1), splits(mnist, seed=1), splits(mnist, seed=2)
    assert np.array_equal(a["val"][0], b["val"][0])
    assert not np.array_equal(a["val"][0], c["val"][0])


def test_every_class_is_in_validation_and_limits_apply(mnist):
    s = splits(mnist, validation_size=1000, train_limit=3000, test_limit=500)
    assert len(s["train"][1]) == 3000 and len(s["val"][1]) == 1000 and len(s["test"][1]) == 500
    assert set(np.unique(s["val"][1])) == set(range(10))

