"""POST /read: a page with a written number -> the number, digit by digit, with boxes.

With the number reader (issue 30: digits-reader@champion, a CTC model over the whole line) the page goes
decode -> digits.line (the line's strip) -> the reader -> digits.line.decode (digits, their
probabilities and columns) -> boxes on the page. Without one (none registered, READER_NAME=off) the
number is cut into digits and each is read by the digit model (digits/segment.py), as before the reader.
With conf/image.toml's [read] combine = "surer", the page is also cut into digits and read by the digit
model, and that reading wins where the two differ and its least sure digit is surer than the reader's by
more than segmenter_margin, unless the reader saw ink that is no digit (its own "not a digit" class, or
no token at all): the segmenter reads letters and scribbles as digits more often than the reader does.
tuning/read_choice.py measures the choice on validation numbers. The answer has the same shape either
way; `model` names the model(s) that read it: "digits-reader@1" or "digits-reader@1+digits@7".
"""
import numpy as np

from digits import line as lines
from digits.normalise import to_mnist
from digits.segment import read as segment_and_read
from digits.settings import READ
from serve import answers


def number(gray: np.ndarray, champion, reader=None, debug=False, combine=None, margin=None) -> dict:
    """A decoded page -> /read's answer. champion: the digit model; reader: the number reader or None;
    combine, margin: conf/image.toml [read]'s unless given."""
    if reader is None:
        return answers.number(segment_and_read(gray, champion.calibrated), champion, debug)
    read, no_digit = by_reader(gray, reader, debug)
    surer = (combine or READ.combine) == "surer"
    if surer and not no_digit:
        cut = answers.number(segment_and_read(gray, champion.calibrated), champion, debug, count=False)
        if cut["number"] is not None and cut["number"] != read["number"] and \
                least_sure(cut) > least_sure(read) + (READ.segmenter_margin if margin is None else margin):
            read = cut
    if surer:
        read = {**read, "model": f"{reader.label}+{champion.label}"}
    for digit in read["digits"]:
        answers.counted(digit)
    return read


def least_sure(answer) -> float:
    """The confidence of an answer's least sure digit (0 when it read no number)."""
    return min((d["confidence"] for d in answer["digits"]), default=0.0) if answer["number"] is not None else 0.0


def by_reader(gray, reader, debug=False):
    """-> (the number reader's answer, whether it saw ink that is no digit). The answer: the line's strip,
    its frames, the digits decoded from them with their probabilities (without the blank) and boxes;
    "not_a_digit" when a token is no digit (the reader's own verdict) or under the registered rejection
    threshold (unsure)."""
    label = reader.label
    strip = lines.line(gray)
    if strip is None:
        return {"number": None, "reason": "blank", "digits": [], "model": label}, False
    frames = reader.predict(lines.batch([strip.image]))[0]
    digits = []
    for c, p, (c0, c1) in lines.decode(frames, strip.image.shape[1], strip.image):
        said = {"prediction": int(c) if c != lines.NOT_A_DIGIT else None, "confidence": round(float(p[:10].max()), 6),
                "probabilities": [round(float(v), 6) for v in p[:10]], "not_a_digit": round(float(p[10]), 6),
                "box": strip.box(c0, c1)}
        if said["prediction"] is None or said["confidence"] < reader.rejection_threshold:
            said.update(prediction=None, reason="not_a_digit")
        if debug:
            said["input"] = answers.png_data_url(to_mnist(strip.image[:, c0:c1]))
        digits.append(said)
    no_digit = not digits or any(d["not_a_digit"] > max(d["probabilities"]) for d in digits)
    if not digits or any(d["prediction"] is None for d in digits):  # ink that reads as no number at all
        return {"number": None, "reason": "not_a_digit", "digits": digits, "model": label}, no_digit
    return {"number": "".join(str(d["prediction"]) for d in digits), "digits": digits, "model": label}, no_digit
