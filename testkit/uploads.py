"""The robustness suite's renderings: what people upload, drawn deterministically from MNIST digits.

Sixteen single-digit conditions (pen on paper as a JPEG, phone photos, transparent canvases, thick and thin
pens, EXIF-rotated JPEGs, every accepted format and mode), the eight field conditions of testkit/field.py
(printed paper, pencil, coloured ink, thumbnails, 12 MP photos, MNIST's own PNGs), written numbers (apart,
touching, overlapping, 7-8 digits long), seven kinds of non-digit, and two rows of pages for /read that
are no written number (a single digit; the non-digits). Each condition has its own random stream (seed, name), so a subset draws the same
images as the whole. Kept apart from the training renderings on purpose: pipeline/uploads.py and
pipeline/negatives.py draw with their own code, other ranges and other fonts (Pillow's own font here,
matplotlib's and other handwriting fonts there), so the suite measures what training did not see. benchmarks/robustness.py measures
the served model on these; tests check that they are what they say.
"""
import zlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from testkit.field import FIELD, make_handwritten_letters, make_printed_blank
from testkit.images import encode
from testkit.pages import GLYPHS, canvas, ink_mask, on_paper, pen_colour, plain


# --- single-digit conditions: f(digit uint8 28x28, rng) -> bytes -------------------------------------

def make_paper_jpeg(digit, rng):
    """Black ink on white paper, 100-1000 px canvases of any aspect ratio, JPEG quality 60-95."""
    ink = int(rng.integers(0, 60))
    page = on_paper(digit, rng, ink=(ink,) * 3)
    return encode(Image.fromarray(page).convert("L"), "JPEG", quality=int(rng.integers(60, 96)))


def make_phone_photo(digit, rng):
    """A photo of a note: grey paper, uneven light, a colour cast, slight tilt, blur, sensor noise."""
    paper = float(rng.uniform(140, 215))
    ink = float(rng.uniform(20, 70))
    page = on_paper(digit, rng, canvas=(300, 1000), share=(0.25, 0.8), paper=(paper,) * 3, ink=(ink,) * 3)
    image = Image.fromarray(page).rotate(float(rng.uniform(-8, 8)), Image.BICUBIC, fillcolor=(int(paper),) * 3)
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 2.0))))
    rgb = np.asarray(image, np.float32)
    h, w = rgb.shape[:2]
    # Light falling off across the page in a random direction, by up to +-25%.
    angle, strength = rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.25)
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = (np.cos(angle) * (xx / w - 0.5) + np.sin(angle) * (yy / h - 0.5)) * 2
    rgb *= (1 + strength * ramp)[..., None]
    rgb *= rng.uniform(0.85, 1.12, size=3)  # warm indoor light, cool daylight
    rgb += rng.normal(0, rng.uniform(2, 8), size=rgb.shape)
    photo = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    return encode(photo, "JPEG", quality=int(rng.integers(70, 93)))


def make_rgba_canvas(digit, rng):
    """A browser <canvas> drawing: strokes (black, sometimes coloured) on a fully transparent background."""
    size = int(rng.integers(200, 601))
    colour = (0, 0, 0) if rng.random() < 0.7 else tuple(int(v) for v in rng.integers(0, 256, size=3))
    mask = np.zeros((size, size), np.float32)
    box = int(size * rng.uniform(0.5, 0.95))
    top, left = (int(v) for v in rng.integers(0, size - box + 1, size=2))
    mask[top:top + box, left:left + box] = ink_mask(digit, box, pen=int(rng.integers(0, 4)))  # canvas brushes are fat
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., :3] = colour  # the colour under alpha 0 is whatever the app left there: black here
    rgba[..., 3] = (mask * 255).round().astype(np.uint8)
    return encode(Image.fromarray(rgba, "RGBA"), "PNG")


def make_thick_pen(digit, rng):
    """A marker: strokes 1.5 to 3 px wider than MNIST's at 28x28."""
    return encode(plain(digit, rng, pen=int(rng.integers(3, 7))), "PNG")


def make_thin_pen(digit, rng):
    """A fine liner: strokes about 1 px narrower than MNIST's at 28x28."""
    return encode(plain(digit, rng, pen=-int(rng.integers(2, 4))), "PNG")


# EXIF Orientation -> the transpose that turns the upright picture into the stored pixels: the inverse of
# what ImageOps.exif_transpose (and every phone gallery) applies to show it upright.
STORED_AS = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def make_exif_rotated(digit, rng):
    """A phone JPEG held sideways: pixels stored rotated, the Orientation tag says how to turn them back."""
    orientation = int(rng.choice(list(STORED_AS)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = plain(digit, rng).transpose(STORED_AS[orientation])
    return encode(stored, "JPEG", quality=90, exif=exif)


def make_png16(digit, rng):
    """16-bit grayscale PNG (scanners, medical and scientific tools): mode I;16, values 0-65535."""
    gray = np.asarray(plain(digit, rng).convert("L"), np.float32)
    return encode(Image.fromarray((gray * 257).round().astype(np.uint16)), "PNG")


def make_palette_png(digit, rng):
    """An indexed-colour PNG, as image optimisers (pngquant, optipng) write them."""
    return encode(plain(digit, rng).quantize(int(rng.choice([4, 16, 256]))), "PNG")


def make_gray_alpha_png(digit, rng):
    """Grayscale + alpha PNG: either an opaque page or ink on a transparent background."""
    gray = plain(digit, rng).convert("L")
    if rng.random() < 0.5:
        alpha = Image.new("L", gray.size, 255)
    else:  # ink-only: alpha is the ink, the gray under it black
        alpha = gray.point(lambda v: 255 - v)
        gray = Image.new("L", gray.size, 0)
    return encode(Image.merge("LA", (gray, alpha)), "PNG")


def make_rgba_png(digit, rng):
    """An opaque RGBA PNG (screenshots, most editors' default export)."""
    return encode(plain(digit, rng).convert("RGBA"), "PNG")


def make_cmyk_jpeg(digit, rng):
    """A CMYK JPEG, as print workflows and some scanners write them (Adobe inverted CMYK)."""
    return encode(plain(digit, rng).convert("CMYK"), "JPEG", quality=90)


def make_progressive_jpeg(digit, rng):
    return encode(plain(digit, rng), "JPEG", quality=int(rng.integers(70, 96)), progressive=True, optimize=True)


def make_gif(digit, rng):
    return encode(plain(digit, rng).convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "GIF")


def make_bmp(digit, rng):
    return encode(plain(digit, rng), "BMP")


def make_tiff(digit, rng):
    compression = str(rng.choice(["raw", "tiff_lzw", "tiff_adobe_deflate"]))
    return encode(plain(digit, rng), "TIFF", compression=compression)


def make_webp(digit, rng):
    return encode(plain(digit, rng), "WEBP", quality=int(rng.integers(60, 95)))


CONDITIONS = {
    "paper_jpeg": make_paper_jpeg, "phone_photo": make_phone_photo, "rgba_canvas": make_rgba_canvas,
    "thick_pen": make_thick_pen, "thin_pen": make_thin_pen, "exif_rotated": make_exif_rotated,
    "png16": make_png16, "palette_png": make_palette_png, "gray_alpha_png": make_gray_alpha_png,
    "rgba_png": make_rgba_png, "cmyk_jpeg": make_cmyk_jpeg, "progressive_jpeg": make_progressive_jpeg,
    "gif": make_gif, "bmp": make_bmp, "tiff": make_tiff, "webp": make_webp, **FIELD,
}


# --- written numbers: f([digit, ...], rng) -> bytes -----------------------------------------------

def number_page(digits, rng, gap=(0.12, 0.7), overlap=None):
    """A written number as grey levels (uint8 [H, W]) and each digit's box (x, y, w, h) on it: one height,
    uneven gaps (`gap`, a share of the height), slight vertical jitter. With `overlap` (a range of shares)
    each digit instead starts inside the one before it, by that share of the narrower one's width (at
    least 1 px): the digits overlap in x."""
    height = int(rng.integers(40, 161))
    ink = int(rng.integers(0, 60))
    pieces = []
    for digit in digits:
        rows, cols = np.flatnonzero(digit.max(axis=1) > 40), np.flatnonzero(digit.max(axis=0) > 40)
        crop = digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # the ink, not MNIST's padding
        h = int(height * rng.uniform(0.9, 1.1))
        w = max(2, round(crop.shape[1] * h / crop.shape[0]))
        pieces.append(np.asarray(Image.fromarray(crop).resize((w, h), Image.BILINEAR), np.float32) / 255)
    if overlap is None:
        gaps = [int(height * rng.uniform(*gap)) for _ in pieces[1:]]
    else:
        gaps = [-max(1, round(min(a.shape[1], b.shape[1]) * rng.uniform(*overlap)))
                for a, b in zip(pieces, pieces[1:])]
    margin = int(height * rng.uniform(0.3, 1.5))
    width = sum(p.shape[1] for p in pieces) + sum(gaps) + 2 * margin
    page = np.zeros((int(height * 1.3) + 2 * margin, width), np.float32)  # ink coverage
    x, boxes = margin, []
    for i, piece in enumerate(pieces):
        y = margin + int(rng.integers(0, int(height * 0.3) - (piece.shape[0] - height) + 1))
        region = page[y:y + piece.shape[0], x:x + piece.shape[1]]
        np.maximum(region, piece[:region.shape[0], :region.shape[1]], out=region)
        boxes.append((x, y, piece.shape[1], piece.shape[0]))
        x += piece.shape[1] + (gaps[i] if i < len(gaps) else 0)
    paper = float(rng.uniform(225, 255))
    gray = paper - (paper - ink) * page
    return np.clip(gray, 0, 255).astype(np.uint8), boxes


def make_number(digits, rng, gap=(0.12, 0.7)):
    """2-6 digits written in a row on paper (number_page), as a JPEG. The digits never touch;
    make_touching_number and make_overlapping_number are the hard cases. number_long: 7-8 of them."""
    return encode(Image.fromarray(number_page(digits, rng, gap)[0]), "JPEG", quality=90)


def make_touching_number(digits, rng):
    """Digits written close enough to touch or overlap slightly (by up to 12% of the height): the
    segmenter must cut them apart."""
    return make_number(digits, rng, gap=(-0.12, 0.0))


OVERLAP = (0.05, 0.2)  # number_overlapping: each pair of neighbours overlaps in x by this share of the narrower's width


def make_overlapping_number(digits, rng):
    """Neighbouring digits overlapping in x by 5-20% of the narrower one's width (issue 30): one digit's
    stroke reaches under or over the next, as in quick handwriting."""
    return encode(Image.fromarray(number_page(digits, rng, overlap=OVERLAP)[0]), "JPEG", quality=90)


# --- non-digits: f(rng) -> bytes -----------------------------------------------------------------

def make_blank(rng):
    """Empty paper: white, tinted, softly shaded or noisy; sometimes a fully transparent canvas."""
    if rng.random() < 0.15:
        return encode(Image.new("RGBA", tuple(int(v) for v in rng.integers(100, 600, size=2)), (0, 0, 0, 0)), "PNG")
    page = np.asarray(canvas(rng), np.float32)
    h, w = page.shape[:2]
    page *= (1 - rng.uniform(0, 0.2) * np.linspace(0, 1, w))[None, :, None]
    page += rng.normal(0, rng.uniform(0, 5), size=page.shape)
    return encode(Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)), "JPEG", quality=85)


def make_noise(rng):
    """Pure noise: salt-and-pepper, gaussian or coarse blocks."""
    w, h = (int(v) for v in rng.integers(64, 600, size=2))
    kind = rng.integers(3)
    if kind == 0:
        pixels = np.where(rng.random((h, w)) < rng.uniform(0.02, 0.3), 0, 255)
    elif kind == 1:
        pixels = rng.normal(128, rng.uniform(20, 80), size=(h, w, 3))
    else:
        block = int(rng.integers(4, 40))
        pixels = np.kron(rng.integers(0, 256, size=(h // block + 1, w // block + 1)), np.ones((block, block)))[:h, :w]
    return encode(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), "PNG")


def make_letters(rng):
    """One to three letters or symbols in Pillow's bundled font, dark on paper, like a digit upload."""
    image = canvas(rng)
    text = "".join(rng.choice(list(GLYPHS), size=int(rng.choice([1, 1, 1, 2, 3]))))
    size = int(min(image.size) * rng.uniform(0.3, 0.7))
    font = ImageFont.load_default(size=size)
    ImageDraw.Draw(image).text((image.width / 2, image.height / 2), text, font=font, fill=pen_colour(rng),
                               anchor="mm")
    return encode(image, "JPEG", quality=90)


def make_shapes(rng):
    """Circles, rectangles, triangles, outlined or filled, one to four of them. A lone outlined circle
    is how many people write a zero, so a lone circle is always filled."""
    image = canvas(rng)
    draw = ImageDraw.Draw(image)
    w, h = image.size
    count = int(rng.integers(1, 5))
    for _ in range(count):
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        r = rng.uniform(0.1, 0.35) * min(w, h)
        fill = pen_colour(rng) if rng.random() < 0.4 else None
        kw = {"fill": fill, "outline": pen_colour(rng), "width": max(2, int(r * rng.uniform(0.05, 0.2)))}
        shape = rng.integers(3)
        if shape == 0:
            if count == 1:
                kw["fill"] = kw["outline"]
            draw.ellipse([cx - r, cy - r * rng.uniform(0.6, 1), cx + r, cy + r], **kw)
        elif shape == 1:
            draw.rectangle([cx - r, cy - r * rng.uniform(0.4, 1), cx + r, cy + r], **kw)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], **kw)
    return encode(image, "PNG")


def make_texture(rng):
    """Photos of things that are not writing: stripes, a checkerboard, blobs of colour and shade."""
    w, h = (int(v) for v in rng.integers(100, 700, size=2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:  # fabric, blinds
        angle, period = rng.uniform(0, np.pi), rng.uniform(6, 60)
        value = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    elif kind == 1:  # tiles, a chessboard
        cell = rng.uniform(8, 80)
        value = ((xx // cell + yy // cell) % 2).astype(np.float32)
    else:  # a few soft objects under uneven light
        value = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(2, 7))):
            cy, cx, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.05, 0.3) * max(w, h)
            value += rng.uniform(-1, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        value = (value - value.min()) / max(float(np.ptp(value)), 1e-6)
    colour_a, colour_b = rng.integers(0, 256, size=(2, 3)).astype(np.float32)
    rgb = colour_a + (colour_b - colour_a) * value[..., None] + rng.normal(0, 4, size=(h, w, 3))
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1))
    return encode(image, "JPEG", quality=85)


NON_DIGITS = {"blank": make_blank, "noise": make_noise, "letters": make_letters, "shapes": make_shapes,
              "texture": make_texture, "handwritten_letters": make_handwritten_letters,
              "printed_blank": make_printed_blank}
NUMBERS = {"number": make_number, "number_touching": make_touching_number,
           "number_overlapping": make_overlapping_number, "number_long": make_number}
LENGTHS = {"number_long": (7, 8)}  # digits in a number, fewest and most; the others (2, 6)
NUMBER = "number"
# Pages sent to /read that are not written numbers (issue 30): a plain digit on paper (paper_jpeg's
# drawing, its own stream), and the NON_DIGITS kinds' own pages (generate's, the first few of each kind).
READ_DIGIT, READ_NON_DIGITS = "read_single_digit", "read_non_digits"
READS = [READ_DIGIT, READ_NON_DIGITS]
ALL = [*CONDITIONS, *NUMBERS, *NON_DIGITS, *READS]


def generate(name, n, seed, x, y):
    """[(bytes, label)] for one condition. Each condition has its own random stream (seed, name), so
    running a subset gives the same images as running all of them. A number's label is its digits as a
    string, and so is read_single_digit's (what /read answers); a non-digit's is None. read_non_digits:
    n pages in all, the first n // 7 or n // 7 + 1 of each NON_DIGITS kind (the same pages as the kind's
    own row), the first kinds one more."""
    if name in NUMBERS:
        return [(page, "".join(str(int(v)) for v in y[picks])) for picks, page in numbers(name, n, seed, x)]
    if name == READ_NON_DIGITS:
        kinds = list(NON_DIGITS)
        return [page for i, kind in enumerate(kinds)
                for page in generate(kind, n // len(kinds) + (i < n % len(kinds)), seed, x, y)]
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if name in NON_DIGITS:
        return [(NON_DIGITS[name](rng), None) for _ in range(n)]
    picks = rng.choice(len(x), size=n, replace=n > len(x))
    if name == READ_DIGIT:
        return [(make_paper_jpeg(x[i], rng), str(int(y[i]))) for i in picks]
    return [(CONDITIONS[name](x[i], rng), int(y[i])) for i in picks]


def picked(name, n, seed, count):
    """The indices of the digits `generate` draws for a single-digit condition (of `count` digits)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())]).choice(count, size=n, replace=n > count)


def numbers(name, n, seed, x):
    """(indices of its digits in x, page bytes) for each of n written numbers of a NUMBERS condition:
    generate's pages, with the digits kept by index."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    fewest, most = LENGTHS.get(name, (2, 6))
    for _ in range(n):
        picks = rng.choice(len(x), size=int(rng.integers(fewest, most + 1)))
        yield picks, NUMBERS[name](list(x[picks]), rng)
