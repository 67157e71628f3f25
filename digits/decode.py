"""Uploaded bytes -> grayscale [H, W] in [0, 1], as a person would see it, or a clear ImageError.

Pillow, with only the plugins of the formats we take; EXIF orientation applied; transparency composited
the way a user means it; bombs refused from the header before a byte of pixel data is decoded; big
images box-reduced before anything turns them into floats. Settings: conf/image.toml [decode].
"""
import base64
import binascii
import io
import math

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from digits.settings import DECODE

# Pillow's own decompression-bomb guard stays on (it errors at 2x this); decode() refuses anything over
# its max_pixels from the header first.
Image.MAX_IMAGE_PIXELS = DECODE.max_pixels
# Formats Pillow cannot rasterise that people still try: a 415 that names them beats "not an image".
TEXT_FORMATS = {b"%PDF": "PDF", b"<svg": "SVG", b"<?xml": "SVG (XML)"}
HEIF_BRANDS = {b"heic", b"heix", b"mif1", b"msf1", b"avif"}  # iPhone photos, AVIF: ISO boxes 'ftyp<brand>'


class ImageError(ValueError):
    """An upload that cannot be turned into a digit image; `code` and `status` go into the JSON error."""

    def __init__(self, code, message, status=400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def from_base64(text: str) -> bytes:
    """An image sent as text, base64 or a data: URL -> its bytes. Strict, as /openapi.json's pattern says:
    no whitespace, padded."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageError("bad_base64", f"the image field is not valid base64: {e}") from e


def decode(data: bytes, max_pixels: int = DECODE.max_pixels) -> np.ndarray:
    """Encoded image bytes -> float32 grayscale [H, W] in [0, 1], as a person would see it."""
    if not data:
        raise ImageError("empty", "the upload is empty")
    kind = unsupported_kind(data[:64])
    if kind:
        raise unsupported(kind)
    try:
        # Only the plugins of the formats we take ever parse the bytes: a hostile file cannot reach the
        # header code of the ~40 other formats Pillow knows.
        image = Image.open(io.BytesIO(data), formats=DECODE.formats)  # reads the header only
        refuse_bombs(image, len(data), max_pixels)
        # JPEG: let libjpeg decode only the gray channel at 1/2, 1/4 or 1/8 scale, keeping >= draft_px on
        # each side (plenty for a digit, which ends up 20 px tall): a 12 MP photo decodes 2.5x faster.
        image.draft("L", (DECODE.draft_px, DECODE.draft_px))
        image = ImageOps.exif_transpose(image)
        if image.width == 0 or image.height == 0:
            raise ImageError("unusable_image", "the image has no pixels", status=422)
        if image.mode.startswith("I;16") or image.mode == "I":
            # 16-bit grayscale (PNG, TIFF): Pillow's convert("L") clips at 255 instead of scaling, which
            # turns the whole page white. Scale by the bit depth instead.
            sixteen_bit = image.mode.startswith("I;16")
            pixels = np.asarray(shrink(image.convert("I")), dtype=np.float32)
            scaled = pixels / (65535.0 if sixteen_bit or pixels.max() > 255 else 255.0)
            return np.clip(scaled, 0.0, 1.0)  # mode "I" is 32-bit: out-of-range values stay in [0, 1]
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            image = composite_alpha(shrink(image.convert("RGBA")))
        else:
            image = shrink(image.convert("L"))
    except Image.DecompressionBombError as e:
        raise ImageError("too_many_pixels", str(e), status=422) from e
    except UnidentifiedImageError as e:
        kind = other_format(data)
        if kind:
            raise unsupported(kind) from e
        raise ImageError("not_an_image", "the upload is not an image Pillow can read") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated or corrupt files
        if isinstance(e, ImageError):
            raise
        raise ImageError("corrupt_image", f"the image could not be decoded: {e}") from e
    return np.asarray(image, dtype=np.float32) / 255.0


def refuse_bombs(image: Image.Image, size: int, max_pixels: int):
    """From the header alone: an image over the pixel limit, or one that claims far more pixels than its
    bytes can plausibly hold, is refused before a byte of pixel data is decoded. Decoding costs time and
    memory in proportion to the pixels, not to the upload: a 40 kB PNG can declare 40 MP of zeros."""
    pixels = image.width * image.height
    if pixels > max_pixels:
        raise ImageError("too_many_pixels", f"the image is {image.width}x{image.height} = {pixels:,} pixels, "
                         f"over the limit of {max_pixels:,}", status=422)
    if pixels > DECODE.bomb_min_pixels and pixels > DECODE.bomb_pixels_per_byte * size:
        raise ImageError("too_many_pixels", f"the image declares {image.width}x{image.height} = {pixels:,} "
                         f"pixels in {size:,} bytes (over {DECODE.bomb_pixels_per_byte:,} pixels a byte): a "
                         "decompression bomb, or a page so empty it holds no digit; crop it", status=422)


def shrink(image: Image.Image) -> Image.Image:
    """A big image -> at most work_pixels by an integer box reduction, still 8-bit (or 32-bit for 16-bit
    sources), before anything turns it into floats: later steps then cost the same for a 40 MP scan as
    for a 4 MP one. (JPEGs are mostly small already: libjpeg decoded them in draft mode.)"""
    factor = math.ceil(math.sqrt(image.width * image.height / DECODE.work_pixels))
    return image.reduce(factor) if factor > 1 else image


def other_format(data: bytes):
    """The name of a format Pillow knows but we do not take, from its magic bytes alone (no parsing)."""
    Image.init()
    prefix = data[:16]
    for name in Image.ID:
        factory, accept = Image.OPEN[name]
        try:
            if name not in DECODE.formats and accept is not None and accept(prefix):
                return name
        except Exception:  # some of Pillow's checks assume 16 bytes or more
            continue
    return None


def unsupported_kind(head: bytes):
    """The name of a known format we refuse, from the first bytes; None if it is not one of them."""
    text = head.lstrip()
    for magic, name in TEXT_FORMATS.items():
        if text.startswith(magic):
            return name
    if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
        return "HEIF/AVIF"
    return None


def unsupported(kind) -> ImageError:
    accepted = ", ".join(sorted(DECODE.formats))
    return ImageError("unsupported_type", f"{kind} is not supported: send {accepted}", status=415)


def composite_alpha(rgba: Image.Image) -> Image.Image:
    """Transparent pixels are background. Strokes on a transparent canvas are ink whatever their
    colour (canvas apps often draw black on transparent): put the opaque part on a contrasting backdrop."""
    gray = np.asarray(rgba.convert("L"), dtype=np.float32)
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
    if alpha.min() > 0.99:  # fully opaque: alpha says nothing
        return Image.fromarray(gray.astype(np.uint8))
    opaque_mean = (gray * alpha).sum() / max(alpha.sum(), 1e-6)
    backdrop = 255.0 if opaque_mean < 128 else 0.0
    return Image.fromarray(np.clip(gray * alpha + backdrop * (1 - alpha), 0, 255).astype(np.uint8))
