"""The `id` of a /predict answer: a signed token that itself holds what POST /feedback needs.

Why a token and not a server-side record: gunicorn runs several worker processes, and the feedback that
refers to an answer may land on another worker than the /predict that gave it; a shared record would mean
writing every upload (or its 28x28) somewhere on every /predict, and uploads are never written anywhere
unless the user sends feedback (docs/security.md). So the answer carries it, and only a POST /feedback
makes the server keep it.

What it holds: a format byte, the time it was issued (whole seconds), the answer (0-9, 10 = not a digit,
11 = blank), the confidence (float32), the upload's sha256, the model's name@version and the normalised
28x28 the model saw as uint8. zlib-compressed, fast (an MNIST-like digit is mostly zeros: ~150-350 bytes), then
an HMAC-SHA256 of it by FEEDBACK_SECRET, cut to 16 bytes (128 bits: RFC 2104 allows truncation to half),
then URL-safe base64 without padding: ~250-500 characters. A token not made with the secret, changed in
any byte, or older than FEEDBACK_ID_SECONDS is refused; the contents are signed, not hidden (they are the
client's own upload's 28x28 and the answer it was given).
"""
import base64
import binascii
import hashlib
import hmac
import math
import struct
import time
import zlib
from dataclasses import dataclass

import numpy as np

from digits.decode import ImageError

FORMAT = 1
HEAD = struct.Struct("!BIBf32sB")  # format, issued, answer, confidence, sha256, len(model)
MAC_BYTES = 16
REASONS = {10: "not_a_digit", 11: "blank"}
LIMIT = 4096  # characters: far over any real token (784 bytes of image at worst), so no decompression bomb


@dataclass(frozen=True)
class Answer:
    """What one /predict said, as its id carries it."""
    image28: np.ndarray  # [28, 28] uint8, what the model saw
    sha256: str  # of the upload
    answer: str  # "0"-"9", "not_a_digit" or "blank"
    confidence: float | None
    model: str  # name@version
    issued: int  # unix seconds


def to_uint8(image28) -> np.ndarray:
    return (np.clip(np.asarray(image28, dtype=np.float32), 0, 1) * 255).round().astype(np.uint8)


def issue(secret: bytes, image28, upload_sha256: str, answer: dict, model: str, now=None) -> str:
    """The id of an answer: image28 the normalised [28, 28] floats in [0, 1]; answer the API's dict."""
    code = answer["prediction"] if answer["prediction"] is not None else \
        {v: k for k, v in REASONS.items()}[answer["reason"]]
    name = model.encode()[:255]
    head = HEAD.pack(FORMAT, int(now if now is not None else time.time()), code, float(answer["confidence"]),
                     bytes.fromhex(upload_sha256), len(name))
    # Level 1: 6 us against level 9's 35 us on every /predict, for ~20 more bytes (206 against 188 for the
    # self-test's 7); the reader is the same for every level.
    body = zlib.compress(head + name + to_uint8(image28).tobytes(), 1)
    return base64.urlsafe_b64encode(body + mac(secret, body)).rstrip(b"=").decode()


def read(secret: bytes, token: str, max_age: int, now=None) -> Answer:
    """The answer an id stands for; ImageError 404 `unknown_id` when it was not made here (or was changed),
    410 `expired_id` when it is older than max_age seconds."""
    unknown = ImageError("unknown_id", "this id was not given by this service (or not since it restarted "
                         "without FEEDBACK_SECRET): send the image with the feedback instead", status=404)
    if not isinstance(token, str) or not 0 < len(token) <= LIMIT:
        raise unknown
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise unknown from None
    body, tag = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    if len(raw) <= MAC_BYTES or not hmac.compare_digest(tag, mac(secret, body)):
        raise unknown
    data = zlib.decompress(body)  # signed by us: a well-formed payload of at most ~1 kB
    fmt, issued, code, confidence, digest, length = HEAD.unpack_from(data)
    if fmt != FORMAT:
        raise unknown
    age = (now if now is not None else time.time()) - issued
    if age > max_age:
        raise ImageError("expired_id", f"this answer is {int(age)} s old; ids can be sent back for {max_age} s "
                         "(FEEDBACK_ID_SECONDS): send the image with the feedback instead", status=410)
    model = data[HEAD.size:HEAD.size + length].decode()
    image = np.frombuffer(data[HEAD.size + length:], dtype=np.uint8).reshape(28, 28)
    return Answer(image, digest.hex(), REASONS.get(code, str(code)),
                  None if math.isnan(confidence) else round(confidence, 6), model, issued)


def mac(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, body, hashlib.sha256).digest()[:MAC_BYTES]
