"""The serving settings, read from the environment once, with their defaults. (Which model is served,
MODEL_DIR or MODEL_NAME / MODEL_ALIAS / MLFLOW_TRACKING_URI, and MODEL_PRECISION=int8|float (the INT8
copy of the champion where one passed its check, or always the float one), is resolved in
serve/model.py; gunicorn's HOST / PORT / WORKERS / THREADS in serve/gunicorn.conf.py.)

    MAX_UPLOAD_BYTES=10485760   a request body over this is refused (413) before it is read
    MAX_IMAGE_PIXELS=40000000   an image over this is refused (422) from its header, before decoding (the
                                default is conf/image.toml's decode.max_pixels; Pillow's bomb guard, set
                                from it in digits/decode.py, refuses over twice that whatever this says)
    MAX_BATCH_IMAGES=64         images per POST /predict/batch
    MODEL_POLL_SECONDS=30       how often to ask the registry whether the alias moved (0: never)
    ONNX_THREADS=1              onnxruntime threads per worker (workers x threads should not exceed the cores)
    LOG_FORMAT=text             the access log (serve/access.py) and the server's own log lines: text or json
    ACCESS_LOG=off              where the access log goes: - (stdout), a file to append to, or off (the
                                default in process; serve/gunicorn.conf.py makes it - for the server)
    DRAIN_BYTES=41943040        before an answer is sent, read and discard up to this much of a body the
                                app left unread (a 413's upload), so the client sees the answer and not a
                                reset; a body declaring more is not drained (serve/drain.py). 4x the limit
    DRAIN_SECONDS=5             ... for at most this long in all, and never more than 1 s without a byte
    PROXY_HOPS=0                how many proxies in front of the server to trust: the client address (the
                                access log's `remote`) and scheme are then taken from that many entries of
                                X-Forwarded-For / X-Forwarded-Proto (werkzeug's ProxyFix). 0, the default,
                                ignores those headers: anyone can send them. 1 behind `make serve-proxy`'s
                                nginx, which sets them; never more than the proxies really in front

Feedback (POST /feedback, serve/feedback.py; the store, serve/store.py; docs/security.md "Feedback"):

    FEEDBACK_DB_URL=            the store, an SQLAlchemy URL (postgresql+psycopg://user@host/db); empty: SQLite
                                in FEEDBACK_DIR/feedback.db
    FEEDBACK_DIR=feedback       that SQLite file's folder (git-ignored), relative to the working directory
    FEEDBACK_SECRET=            the key that signs /predict's answer ids (HMAC-SHA256). Unset, each server start
                                makes one (serve/gunicorn.conf.py, before the workers fork: all share it), so
                                ids do not outlive a restart; set it to keep them valid across restarts
    FEEDBACK_ID_SECONDS=3600    how long an answer id can be sent back as feedback
    FEEDBACK_RATE=30            corrections a minute each client address may send, per worker (0: no limit)
    FEEDBACK_BURST=10           ... of which this many at once
    FEEDBACK_MAX_BYTES=         a feedback request's body limit; empty: MAX_UPLOAD_BYTES (never more)
    FEEDBACK_MAX_PENDING=100000 corrections waiting for review, in all, before new ones are refused (507)
    FEEDBACK_STORE_RAW=0        1: keep the upload itself with a correction sent with its image ...
    FEEDBACK_RAW_MAX_BYTES=2097152  ... when it is no larger than this (else only its 28x28 and sha256)

The proxy (`make serve-proxy`, serve/proxy.py: nginx in front of two gunicorn backends) reads its own,
in ProxySettings below:

    RATE_LIMIT=10               requests a second each client address may make, on average (nginx
                                limit_req); over it and its burst, a JSON 429
    RATE_BURST=20               requests a client may make at once above that rate before the 429s start
"""
import math
import os
import secrets
from dataclasses import dataclass, field

from digits.contract import DEFAULT_FEEDBACK_DIR, feedback_url
from digits.settings import DECODE


DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024


class ConfigError(ValueError):
    """A setting in the environment that cannot be used; the message names it."""


def env_choice(name, default, choices):
    value = os.environ.get(name) or default
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


def env_number(name, default, kind=int, minimum=1):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a {'whole ' if kind is int else ''}number") from None
    if not (number >= minimum and math.isfinite(number)):  # also refuses nan and inf
        raise ConfigError(f"{name}={value!r} must be at least {minimum}")
    return number


@dataclass(frozen=True)
class Settings:
    max_upload_bytes: int = field(default_factory=lambda: env_number("MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES))
    max_image_pixels: int = field(default_factory=lambda: env_number("MAX_IMAGE_PIXELS", DECODE.max_pixels))
    max_batch_images: int = field(default_factory=lambda: env_number("MAX_BATCH_IMAGES", 64))
    model_poll_seconds: float = field(default_factory=lambda: env_number("MODEL_POLL_SECONDS", 30.0, float, 0))
    onnx_threads: int = field(default_factory=lambda: env_number("ONNX_THREADS", 1))
    log_format: str = field(default_factory=lambda: env_choice("LOG_FORMAT", "text", ("text", "json")))
    access_log: str = field(default_factory=lambda: os.environ.get("ACCESS_LOG", "off"))
    drain_bytes: int = field(default_factory=lambda: env_number("DRAIN_BYTES", 40 * 1024 * 1024, minimum=0))
    drain_seconds: float = field(default_factory=lambda: env_number("DRAIN_SECONDS", 5.0, float, 0))
    proxy_hops: int = field(default_factory=lambda: env_number("PROXY_HOPS", 0, minimum=0))
    feedback_db_url: str = field(default_factory=lambda: os.environ.get("FEEDBACK_DB_URL", ""))
    feedback_dir: str = field(default_factory=lambda: os.environ.get("FEEDBACK_DIR") or DEFAULT_FEEDBACK_DIR)
    # Unset (tests, `python -m serve --dev`): one per process, so ids do not survive a restart.
    feedback_secret: bytes = field(default_factory=lambda: (os.environ.get("FEEDBACK_SECRET") or "").encode()
                                   or secrets.token_bytes(32), repr=False)
    feedback_id_seconds: int = field(default_factory=lambda: env_number("FEEDBACK_ID_SECONDS", 3600))
    feedback_rate: float = field(default_factory=lambda: env_number("FEEDBACK_RATE", 30.0, float, 0))
    feedback_burst: int = field(default_factory=lambda: env_number("FEEDBACK_BURST", 10))
    feedback_max_bytes: int = field(default_factory=lambda: env_number("FEEDBACK_MAX_BYTES", 0, minimum=0))
    feedback_max_pending: int = field(default_factory=lambda: env_number("FEEDBACK_MAX_PENDING", 100_000))
    feedback_store_raw: bool = field(default_factory=lambda: env_choice("FEEDBACK_STORE_RAW", "0", ("0", "1")) == "1")
    feedback_raw_max_bytes: int = field(default_factory=lambda: env_number("FEEDBACK_RAW_MAX_BYTES", 2 * 1024 * 1024))

    def feedback_url(self) -> str:
        """Where corrections are kept: FEEDBACK_DB_URL, else SQLite in FEEDBACK_DIR."""
        return feedback_url(self.feedback_db_url, self.feedback_dir)

    def feedback_body_limit(self) -> int:
        return min(self.feedback_max_bytes or self.max_upload_bytes, self.max_upload_bytes)


@dataclass(frozen=True)
class ProxySettings:
    rate_limit: int = field(default_factory=lambda: env_number("RATE_LIMIT", 10))  # nginx takes whole r/s
    rate_burst: int = field(default_factory=lambda: env_number("RATE_BURST", 20, minimum=0))
