"""The serving limits, read from the environment once, with their defaults. (Which model is served,
MODEL_NAME / MODEL_ALIAS / MLFLOW_TRACKING_URI, is resolved in serve/model.py.)

    MAX_UPLOAD_BYTES=10485760   a request body over this is refused (413) before it is read
    MAX_IMAGE_PIXELS=40000000   an image over this is refused (422) from its header, before decoding
                                (Pillow's bomb guard, set in serve/images.py, refuses over 80 MP whatever this says)
    MAX_BATCH_IMAGES=64         images per POST /predict/batch
"""
import os
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A setting in the environment that cannot be used; the message names it."""


def env_int(name, default):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a whole number") from None
    if number <= 0:
        raise ConfigError(f"{name}={value!r} must be positive")
    return number


@dataclass(frozen=True)
class Settings:
    max_upload_bytes: int = field(default_factory=lambda: env_int("MAX_UPLOAD_BYTES", 10 * 1024 * 1024))
    max_image_pixels: int = field(default_factory=lambda: env_int("MAX_IMAGE_PIXELS", 40_000_000))
    max_batch_images: int = field(default_factory=lambda: env_int("MAX_BATCH_IMAGES", 64))
