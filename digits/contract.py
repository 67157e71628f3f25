"""The model contract: what every registered model takes and answers, and where it is registered.

A registered version's artifacts hold model.onnx: float32 [N, 28, 28, 1], values in [0, 1], white ink on
black (digits.normalise makes that out of an upload), answering [N, 10] or [N, 11] probabilities; index
10, when present, is "not a digit". The version carries the sha256 of model.onnx, the temperature and
the rejection threshold as tags (pipeline/register.py writes them, serve/model.py checks them).
"""
import hashlib

import numpy as np

CLASSES = tuple(str(d) for d in range(10)) + ("not_a_digit",)
NOT_A_DIGIT = CLASSES.index("not_a_digit")
INPUT = "float32 [N,28,28,1] in [0,1], white ink on black"

EXPERIMENT = "digits"  # MLflow experiment of the training runs
MODEL_NAME = "digits"  # registered model name
ALIAS = "champion"  # the alias the register stage moves and servers follow
DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"  # MLFLOW_TRACKING_URI overrides it


def to_input(x_uint8) -> np.ndarray:
    """uint8 [N, 28, 28] (MNIST's own, or normalised uploads stored as bytes) -> float32 [N, 28, 28, 1]."""
    return (np.asarray(x_uint8, dtype=np.float32) / 255.0)[..., None]


def with_temperature(probs, temperature):
    """Softmax of log(probs) / T: the model outputs probabilities, so log-probs stand in for logits.
    The evaluate stage fits T with this function and the server applies it with it."""
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def digit_confidence(probs):
    """The probability of the best digit: what the server reports, and what rejection thresholds."""
    return probs[:, :10].max(axis=1)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
