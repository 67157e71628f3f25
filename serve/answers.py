"""The JSON answers: a model's calibrated probabilities for some 28x28s -> what the API says about each.

Confidence is calibrated (the registered temperature); under the registered rejection threshold the
answer is "not a digit"; an image with no ink at all is "blank" whatever the model thinks of it.
"""
import base64
import io

import numpy as np
from PIL import Image

from digits import contract
from serve import metrics


def digits(images28, champion, probabilities=None, debug=False, count=True) -> list:
    """[N, 28, 28] -> one answer dict per image, all from the same champion. probabilities: the champion's
    calibrated output for these images, when the caller already has it. count: into the metrics (`counted`)."""
    if probabilities is None:
        probabilities = champion.calibrated(np.stack(images28)[..., None])
    answers = []
    for image28, p in zip(images28, probabilities):
        answer = contract.answer(image28, p, champion.rejection_threshold)
        if count:
            counted(answer)
        if debug:
            answer["input"] = png_data_url(image28)  # the 28x28 the model saw
        answers.append(answer)
    return answers


def counted(answer):
    """One answer into the Prometheus series: its confidence, and what it said."""
    if answer.get("reason") != "blank":  # an empty square has no confidence to drift
        metrics.CONFIDENCE.observe(answer["confidence"])
    metrics.PREDICTIONS.labels(str(answer["prediction"]) if answer["prediction"] is not None else answer["reason"]).inc()


def number(found, champion, debug=False, count=True) -> dict:
    """digits.segment.read's [(box, 28x28, probabilities)] -> /read's answer: the number, digit by digit."""
    answers = digits([image for _, image, _ in found], champion, [p for _, _, p in found], debug, count) if found else []
    for (box, _, _), digit in zip(found, answers):
        digit["box"] = box
    if not answers:
        return {"number": None, "reason": "blank", "digits": [], "model": champion.label}
    if any(d["prediction"] is None for d in answers):  # a number with a hole in it is not that number
        return {"number": None, "reason": "not_a_digit", "digits": answers, "model": champion.label}
    return {"number": "".join(str(d["prediction"]) for d in answers), "digits": answers, "model": champion.label}


def said(answer) -> int | str:
    """An answer in one word for the access log: the digit, or why there is none."""
    return answer["prediction"] if answer["prediction"] is not None else answer["reason"]


def png_data_url(image28: np.ndarray) -> str:
    """The 28x28 the model saw, as a small PNG data URL (for ?debug=1 and the web page)."""
    buffer = io.BytesIO()
    Image.fromarray((np.clip(image28, 0, 1) * 255).round().astype(np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
