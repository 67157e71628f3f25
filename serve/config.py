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

The proxy (`make serve-proxy`, serve/proxy.py: nginx in front of two gunicorn backends) reads its own,
in ProxySettings below:

    RATE_LIMIT=10               requests a second each client address may make, on average (nginx
                                limit_req); over it and its burst, a JSON 429
    RATE_BURST=20               requests a client may make at once above that rate before the 429s start
"""
import math
import os
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class ProxySettings:
    rate_limit: int = field(default_factory=lambda: env_number("RATE_LIMIT", 10))  # nginx takes whole r/s
    rate_burst: int = field(default_factory=lambda: env_number("RATE_BURST", 20, minimum=0))
