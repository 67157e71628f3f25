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
