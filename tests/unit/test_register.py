"""The register stage's choice: on validation only, and never a model that cannot say "not a digit"
while one that can is there."""
from pipeline.register import choose


def row(variant, val, rejected, ms=0.1, classes=11):
    return {"variant": variant, "val_accuracy": val, "val_non_digits_rejected": rejected, "latency_ms_median": ms,
            "classes": classes, "test_accuracy": 1.0 - val}  # test the other way round: it must play no part


def test_the_best_validation_accuracy_among_those_that_reject_enough():
    rows = [row("cnn", 0.995, 0.10), row("robust", 0.991, 0.97), row("strong", 0.993, 0.96)]
    assert choose(rows, 0.95)["variant"] == "strong"


def test_when_none_rejects_enough_a_model_with_a_not_a_digit_class_wins():
    """The quick profile's case: robust_fast rejected 93.7% of held-out non-digits, under the 95% floor;
    cnn, with no eleventh class, rejects 17% by its threshold alone."""
    rows = [row("cnn", 0.9902, 0.17, classes=10), row("robust_fast", 0.9896, 0.9365), row("dense", 0.9828, 0.14, classes=10)]
    assert choose(rows, 0.95, 0.005)["variant"] == "robust_fast"


def test_when_none_rejects_enough_a_model_with_the_class_that_reads_much_worse_does_not_win():
    """The smoke pipeline's case: 2 epochs, and the eleven-class ensemble reads validation digits far worse."""
    rows = [row("cnn", 0.97, 0.20, classes=10), row("ensemble", 0.93, 0.50), row("dense", 0.895, 0.40, classes=10)]
    assert choose(rows, 0.95, 0.005)["variant"] == "cnn"


def test_an_undertrained_model_that_refuses_much_does_not_win_by_refusing():
    """A 2-epoch dense model is unsure of everything: its threshold refuses more non-digits than cnn's."""
    rows = [row("dense", 0.895, 0.40, classes=10), row("cnn", 0.97, 0.20, classes=10)]
    assert choose(rows, 0.95, 0.005)["variant"] == "cnn"


def test_ties_go_to_the_faster_model():
    rows = [row("a", 0.99, 0.97, ms=0.2), row("b", 0.99, 0.97, ms=0.1)]
    assert choose(rows, 0.95)["variant"] == "b"
