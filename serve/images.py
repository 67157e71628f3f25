"""Uploaded bytes -> the 28x28 float image the model expects (white ink on black, values in [0, 1]).

decode: Pillow, EXIF orientation applied, transparency composited the way a user means it.
normalise: LeCun's procedure for MNIST itself: find the ink, fit it into 20x20 keeping its aspect
ratio (anti-aliased), and place it by centre of mass in 28x28. Skipping this is why demos that just
resize the whole upload "always say 7".
"""
import base64
import io
import math

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's own decompression-bomb guard stays on (it errors at 2x this); decode() refuses anything over
# its max_pixels from the header first, before a byte of pixel data is decoded.
Image.MAX_IMAGE_PIXELS = 40_000_000
# What people upload, as Pillow's plugin names (JPEG's also opens MPO, how many phones save JPEGs). Pillow
# knows more (PSD, ICO, PCX, ...): those are refused as unsupported, not guessed at.
OPENERS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")
# Decoding costs in proportion to the pixels; 8-bit PNG's deflate cannot pack more than ~1,030 pixels in a
# byte, and a page with a digit on it packs far fewer. Over BOMB_MIN_PIXELS, more than this is refused.
BOMB_PIXELS_PER_BYTE = 1000
BOMB_MIN_PIXELS = 4_000_000
WORK_PIXELS = 4_000_000  # decode() hands normalise at most this many pixels (see shrink)
# Formats Pillow cannot rasterise that people still try: a 415 that names them beats "not an image".
TEXT_FORMATS = {b"%PDF": "PDF", b"<svg": "SVG", b"<?xml": "SVG (XML)"}
HEIF_BRANDS = {b"heic", b"heix", b"mif1", b"msf1", b"avif"}  # iPhone photos, AVIF: ISO boxes 'ftyp<brand>'


class ImageError(ValueError):
    """An upload that cannot be turned into a digit image; `code` and `status` go into the JSON error."""

    def __init__(self, code, message, status=400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def decode(data: bytes, max_pixels: int = Image.MAX_IMAGE_PIXELS) -> np.ndarray:
    """Encoded image bytes -> float32 grayscale [H, W] in [0, 1], as a person would see it."""
    if not data:
        raise ImageError("empty", "the upload is empty")
    kind = unsupported_kind(data[:64])
    if kind:
        raise unsupported(kind)
    try:
        # Only the plugins of the formats we take ever parse the bytes: a hostile file cannot reach the
        # header code of the ~40 other formats Pillow knows.
        image = Image.open(io.BytesIO(data), formats=OPENERS)  # reads the header only
        refuse_bombs(image, len(data), max_pixels)
        # JPEG: let libjpeg decode only the gray channel at 1/2, 1/4 or 1/8 scale, keeping >= 320 px on
        # each side (plenty for a digit, which ends up 20 px tall): a 12 MP photo decodes 2.5x faster.
        image.draft("L", (320, 320))
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
    if pixels > BOMB_MIN_PIXELS and pixels > BOMB_PIXELS_PER_BYTE * size:
        raise ImageError("too_many_pixels", f"the image declares {image.width}x{image.height} = {pixels:,} "
                         f"pixels in {size:,} bytes (over {BOMB_PIXELS_PER_BYTE:,} pixels a byte): a "
                         "decompression bomb, or a page so empty it holds no digit; crop it", status=422)


def shrink(image: Image.Image) -> Image.Image:
    """A big image -> at most WORK_PIXELS by an integer box reduction, still 8-bit (or 32-bit for 16-bit
    sources), before anything turns it into floats: later steps then cost the same for a 40 MP scan as
    for a 4 MP one. (JPEGs are mostly small already: libjpeg decoded them in draft mode.)"""
    factor = math.ceil(math.sqrt(image.width * image.height / WORK_PIXELS))
    return image.reduce(factor) if factor > 1 else image


def other_format(data: bytes):
    """The name of a format Pillow knows but we do not take, from its magic bytes alone (no parsing)."""
    Image.init()
    prefix = data[:16]
    for name in Image.ID:
        factory, accept = Image.OPEN[name]
        try:
            if name not in OPENERS and accept is not None and accept(prefix):
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
    accepted = ", ".join(sorted(OPENERS))
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


def median(values: np.ndarray) -> float:
    """The exact upper median (element size // 2 in sorted order); this runs on every request.

    A page is mostly one paper value, and np.partition crawls over such runs of equal values (6 ms on
    a 200k-pixel page). So first guess from a strided sample, and check the guess exactly with two
    counts: it is the answer when fewer than k+1 values lie below it and at least k+1 at or below it."""
    flat = values.ravel()
    k = flat.size // 2
    if flat.size > 4096:
        sample = flat[::flat.size // 2048]
        guess = sample[np.argpartition(sample, sample.size // 2)[sample.size // 2]]
        below = np.count_nonzero(flat < guess)
        if below <= k < below + np.count_nonzero(flat == guess):
            return float(guess)
    return float(np.partition(flat, k)[k])


def background_surface(ink: np.ndarray, size=48, rounds=3) -> np.ndarray:
    """The paper's own level under a lamp: a smooth quadratic surface fitted to the background only.

    Fitted on a <= 48 px thumbnail; each round drops the pixels well above the surface (ink) and fits
    again. Smooth lighting gradients and shadows follow a low-order surface, strokes do not, so the
    strokes survive the subtraction whatever their thickness (a local filter would eat thick ones)."""
    h, w = ink.shape
    scale = min(1.0, size / max(h, w))
    small = ink if scale == 1.0 else np.asarray(
        Image.fromarray(ink).resize((max(2, round(w * scale)), max(2, round(h * scale))), Image.BOX))
    sy, sx = small.shape
    y, x = np.mgrid[0:sy, 0:sx]
    y, x = (y + 0.5) / sy - 0.5, (x + 0.5) / sx - 0.5
    terms = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1).reshape(-1, 6).astype(np.float32)
    values, keep = small.ravel(), np.ones(small.size, bool)
    for _ in range(rounds):
        chosen = terms[keep]  # least squares through the 6x6 normal equations: a tenth of lstsq's cost
        coefficients = np.linalg.solve(chosen.T @ chosen + 1e-6 * np.eye(6, dtype=np.float32),
                                       chosen.T @ values[keep])
        residual = values - terms @ coefficients
        spread = 1.4826 * median(np.abs(residual[keep] - median(residual[keep]))) + 0.01
        keep = residual < 2.5 * spread  # ink is brighter than the paper in this polarity
        if keep.sum() < 12:
            break
    gy, gx = ((np.arange(h, dtype=np.float32) + 0.5) / h - 0.5), ((np.arange(w, dtype=np.float32) + 0.5) / w - 0.5)
    c = coefficients.astype(np.float32)
    return (c[0] + c[2] * gy[:, None] + c[5] * (gy * gy)[:, None]
            + gx[None, :] * (c[1] + c[4] * gy[:, None]) + c[3] * (gx * gx)[None, :])


# A share of the page's strongest ink. Below it: paper texture and JPEG noise, not ink. Lower keeps more
# of a fine pen's faint strokes and more noise with them; on validation uploads 0.15 and 0.25 read as
# many digits right as 0.2 within a few in 12,000 (benchmarks/normaliser_settings.py).
INK_CUTOFF = 0.2


def ink_map(gray: np.ndarray):
    """Grayscale [H, W] in [0, 1] -> ink strength [H, W] in [0, 1] (0 = background), or None if blank."""
    # Ink polarity: the background is what the border mostly is, and the ink is whichever way from it
    # reaches further. (Not "the paper is lighter than mid-grey": paper photographed in dim light is
    # darker than that, and the pen darker still.)
    sides = [gray[0], gray[-1], gray[:, 0], gray[:, -1]]
    background = median(np.concatenate(sides))
    dark_ink = background - float(gray.min()) > float(gray.max()) - background
    ink = 1.0 - gray if dark_ink else gray.copy()
    # Flatten the background to 0 and stretch the ink to 1. Evenly lit (the four edges agree: scans,
    # canvases, MNIST itself): one level, cheap. Otherwise (a lamp, a shadow): a fitted surface.
    levels = [median(side) for side in sides]
    ink -= median(ink) if max(levels) - min(levels) < 0.04 else background_surface(ink)
    peak = float(ink.max())
    if peak < 0.1:
        return None
    ink *= 1.0 / peak
    ink[ink < INK_CUTOFF] = 0
    return ink if ink.any() else None


# MNIST's own stroke width, as stroke_width() measures it with the digit's box drawn 80 px tall: the
# 10th and 90th percentiles over 2,000 validation digits. A pen outside this band is thinned or
# thickened to the band's nearest edge; digits inside it are left exactly as they are.
STROKE_BAND = (5.6, 10.8)
WORK_BOX = 80  # px: 4x the 20 px box, so one step of a 3x3 filter moves each edge a quarter pixel at 28x28


def stroke_width(ink_image: Image.Image) -> float:
    """Mean stroke width in px: a stroke of width w and length L covers w*L pixels and has 2*L edge pixels."""
    # Outside the crop counts as background: solid ink along the crop's edge (the sides of a sharp-edged
    # 1) is edge. (With PIL's filters, which repeat the border pixels, it once was not: a 1 in a written
    # number measured 25.7 px, over twice MNIST's width, and was ground down to a sliver the model
    # called "not a digit".)
    mask = np.asarray(ink_image) > 127
    area = np.count_nonzero(mask)
    edge = area - np.count_nonzero(filter3x3(mask, np.minimum))
    return 2.0 * area / max(edge, 1)


def even_strokes(ink_image: Image.Image) -> Image.Image:
    """A fine liner or a fat marker -> MNIST's stroke width (each 3x3 step adds or removes 2 px of width)."""
    width = stroke_width(ink_image)
    low, high = STROKE_BAND
    steps = round((low - width) / 2) if width < low else -round((width - high) / 2) if width > high else 0
    if not steps:
        return ink_image
    grow = np.maximum if steps > 0 else np.minimum
    evened = np.asarray(ink_image)
    for _ in range(min(abs(steps), 12)):  # a filled blob is not a stroke: do not grind it down forever
        evened = filter3x3(evened, grow)
    return Image.fromarray(evened) if evened.any() else ink_image


def filter3x3(image: np.ndarray, pick) -> np.ndarray:
    """The minimum (pick=np.minimum) or maximum (np.maximum) of each pixel's 3x3 neighbourhood, reading
    background (0) outside the image, so ink at the crop's edge thins and grows like any other. Numpy on
    shifted views, rows then columns: the same result as PIL's Min/MaxFilter, 5x faster on an 80 px crop."""
    padded = np.pad(image, 1)
    rows = pick(pick(padded[:-2], padded[1:-1]), padded[2:])
    return pick(pick(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


def to_mnist(ink: np.ndarray) -> np.ndarray:
    """Ink [H, W] -> float32 [28, 28]: cropped to the ink, its strokes brought to MNIST's width, fitted
    into 20x20 keeping the aspect ratio (anti-aliased), placed by centre of mass in 28x28."""
    out = np.zeros((28, 28), np.float32)
    rows, cols = np.flatnonzero(ink.max(axis=1)), np.flatnonzero(ink.max(axis=0))
    if not len(rows):
        return out
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    scale = WORK_BOX / max(crop.shape)
    work = Image.fromarray((crop * 255).astype(np.uint8)).resize(
        (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))), Image.LANCZOS)
    work = even_strokes(work)
    factor = WORK_BOX // 20
    small = np.asarray(work.resize((max(1, round(work.width / factor)), max(1, round(work.height / factor))), Image.BOX),
                       dtype=np.float32) / 255.0
    mass = small.sum()
    cy = small.sum(axis=1) @ np.arange(small.shape[0]) / mass if mass else 0
    cx = small.sum(axis=0) @ np.arange(small.shape[1]) / mass if mass else 0
    top = min(max(round(14 - cy), 0), 28 - small.shape[0])
    left = min(max(round(14 - cx), 0), 28 - small.shape[1])
    out[top:top + small.shape[0], left:left + small.shape[1]] = small
    return out


def normalise(gray: np.ndarray) -> np.ndarray:
    """Grayscale [H, W] in [0, 1] -> float32 [28, 28] MNIST-style: white ink on black, 20x20 box,
    centred by mass. A blank image gives all zeros."""
    ink = ink_map(gray)
    return np.zeros((28, 28), np.float32) if ink is None else to_mnist(without_specks(ink))


SPECK_SHARE = 0.02  # a blob with under this share of the biggest blob's ink is dust, not part of the digit
SPECK_GRID = 512  # px: specks are looked for on the ink map reduced to at most this size


def without_specks(ink: np.ndarray) -> np.ndarray:
    """Ink with the specks (sensor noise in a photo, dust on a scan) wiped out. The crop is the box
    around all the ink: one dark noise pixel in a corner of a phone photo would otherwise make the
    whole page the box, and the digit a dot in it.

    Blobs are labelled on the ink map reduced by block maximum to <= SPECK_GRID px: a speck stays a
    speck and a stroke stays connected, and the labelling costs the same for a 4 MP page of noise as
    for a 0.25 MP one (at full size it took 3 s)."""
    from serve.segment import components  # segment builds on this module

    factor = max(1, math.ceil(max(ink.shape) / SPECK_GRID))
    small = ink if factor == 1 else block_max(ink, factor)
    kept = np.zeros(small.shape, bool)
    for part in components(small, SPECK_SHARE):
        kept[part.y0:part.y1, part.x0:part.x1] |= part.mask
    if factor > 1:
        kept = np.repeat(np.repeat(kept, factor, axis=0), factor, axis=1)[:ink.shape[0], :ink.shape[1]]
    return np.where(kept, ink, 0).astype(np.float32)


def block_max(image: np.ndarray, factor: int) -> np.ndarray:
    """[H, W] -> [ceil(H / factor), ceil(W / factor)]: the maximum of each factor x factor block."""
    h, w = image.shape
    padded = np.zeros((-(-h // factor) * factor, -(-w // factor) * factor), image.dtype)
    padded[:h, :w] = image
    # factor^2 elementwise maxima of strided views: numpy's max over the short axes of a reshaped view
    # is ~12x slower (it was most of the cost of normalising a page).
    out = padded[::factor, ::factor].copy()
    for dy in range(factor):
        for dx in range(factor):
            np.maximum(out, padded[dy::factor, dx::factor], out=out)
    return out


def png_data_url(image28: np.ndarray) -> str:
    """The 28x28 the model saw, as a small PNG data URL (for ?debug=1 and the web page)."""
    buffer = io.BytesIO()
    Image.fromarray((np.clip(image28, 0, 1) * 255).round().astype(np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def to_model_input(data: bytes, max_pixels: int = Image.MAX_IMAGE_PIXELS) -> np.ndarray:
    """Bytes -> float32 [1, 28, 28, 1], ready for the model."""
    return normalise(decode(data, max_pixels))[None, :, :, None]
