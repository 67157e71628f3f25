"""The model contract: what every registered model takes and answers, and where it is registered.

A registered version's artifacts hold model.onnx: float32 [N, 28, 28, 1], values in [0, 1], white ink on
black (digits.normalise makes that out of an upload), answering [N, 10] or [N, 11] probabilities; index
10, when present, is "not a digit". The version carries the sha256 of model.onnx, the temperature and
the rejection threshold as tags (pipeline/register.py writes them, serve/model.py checks them).

The number reader (issue 30) is registered as READER_NAME under the same aliases, with the same sha256 tag:
its model.onnx takes a line strip and answers per-frame probabilities (digits/line.py INPUT, OUTPUT).
"""
import hashlib
import os

import numpy as np

CLASSES = tuple(str(d) for d in range(10)) + ("not_a_digit",)
NOT_A_DIGIT = CLASSES.index("not_a_digit")
INPUT = "float32 [N,28,28,1] in [0,1], white ink on black"

EXPERIMENT = "digits"  # MLflow experiment of the training runs
MODEL_NAME = "digits"  # registered model name
# The INT8 copy of a version of NAME is registered as NAME-int8 (pipeline/quantise.py) and served in its place.
INT8_SUFFIX = "-int8"
INT8_MODEL_NAME = MODEL_NAME + INT8_SUFFIX
READER_NAME = "digits-reader"  # the number reader's registered name (pipeline/register_reader.py)
ALIAS = "champion"  # the alias servers follow: moved only by the promotion gate or a person (ops/gate.py, ops/promote.py)
CANDIDATE = "candidate"  # the alias the register stages move: what the gate judges against the champion
DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"  # MLFLOW_TRACKING_URI overrides it
# The feedback store of users' corrections when FEEDBACK_DB_URL names none: SQLite in FEEDBACK_DIR. The
# server writes it (serve/store.py owns the schema); the corrections stage (pipeline/corrections.py) reads it.
DEFAULT_FEEDBACK_DIR = "feedback"
FEEDBACK_DB_FILE = "feedback.db"


def feedback_url(db_url="", directory="") -> str:
    """The store's SQLAlchemy URL: db_url (FEEDBACK_DB_URL) when set, else SQLite in directory (FEEDBACK_DIR,
    default feedback/), made absolute against the working directory."""
    path = os.path.abspath(os.path.join(directory or DEFAULT_FEEDBACK_DIR, FEEDBACK_DB_FILE))
    return db_url or f"sqlite:///{path}"


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


def answer(image28, probabilities, rejection_threshold) -> dict:
    """What the API says of one normalised image, given the model's calibrated probabilities for it ([10] or
    [11]): the best digit and how sure, or prediction None with the reason, "blank" (no ink at all: the
    model's opinion of an empty square means nothing) or "not_a_digit" (its best digit is under the
    threshold). serve/answers.py and the MLflow pyfunc model (digits/pyfunc.py) both answer with it."""
    ten = probabilities[:10]
    best = int(np.argmax(ten))
    said = {"prediction": best, "confidence": round(float(ten[best]), 6),
            "probabilities": [round(float(x), 6) for x in ten],
            "not_a_digit": round(max(0.0, 1.0 - float(ten.sum())), 6)}
    if not image28.any():
        said.update(prediction=None, reason="blank", confidence=0.0, probabilities=[0.0] * 10, not_a_digit=1.0)
    elif ten[best] < rejection_threshold:
        said.update(prediction=None, reason="not_a_digit")
    return said
