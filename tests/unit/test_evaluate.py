import numpy as np

from pipeline.evaluate import (confusion_matrix, expected_calibration_error, fit_temperature, per_class,
                               with_temperature)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_temperature_scaling_recovers_a_known_overconfidence():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, size=(20000, 10))
    labels = np.array([rng.choice(10, p=p) for p in softmax(logits)])  # calibrated by construction
    overconfident = softmax(logits * 3)  # as if T = 1/3 had been applied
    t = fit_temperature(overconfident, labels)
    assert abs(t - 3.0) < 0.15
    before = expected_calibration_error(overconfident, labels)
    after = expected_calibration_error(with_temperature(overconfident, t), labels)
    assert before > 0.1 and after < 0.02


def test_confusion_matrix_and_per_class_scores():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 0])
    matrix = confusion_matrix(labels, predicted, classes=3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    scores = per_class(matrix)
    assert scores["1"] == {"precision": round(2 / 3, 5), "recall": 1.0, "f1": 0.8}
    assert scores["2"]["precision"] == 1.0 and scores["2"]["recall"] == 0.5


def test_held_out_corrections_are_judged_as_the_server_answers():
    """A digit, or "not a digit" (10) under the threshold or without ink: digits.contract.answer's rule."""
    from types import SimpleNamespace

    from digits.contract import answer
    from pipeline.evaluate import answers, corrections_metrics

    rng = np.random.default_rng(1)
    probs = softmax(rng.normal(0, 2, size=(300, 11)))
    x = rng.integers(0, 2, size=(300, 28, 28), dtype=np.uint8) * 255
    x[:20] = 0  # blank squares
    said = answers(probs, x, 0.5)
    for image, p, s in zip(x, probs, said):
        expected = answer(image, p, 0.5)["prediction"]
        assert s == (10 if expected is None else expected)
    assert (said[:20] == 10).all() and 0 < (said[20:] == 10).sum() < 280

    session = SimpleNamespace(get_inputs=lambda: [SimpleNamespace(name="x")],
                              run=lambda _, feed: [probs[:len(feed["x"])]])
    metrics = corrections_metrics(session, (x, said), 1.0, 0.5)
    assert metrics == {"corrections_heldout_n": 300, "corrections_heldout_accuracy": 1.0}
    wrong = np.where(said == 10, 3, 10)
    assert corrections_metrics(session, (x, wrong), 1.0, 0.5)["corrections_heldout_accuracy"] == (wrong == said).mean()
    assert corrections_metrics(session, (x[:0], said[:0]), 1.0, 0.5) == {"corrections_heldout_n": 0}
