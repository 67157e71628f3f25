"""The robustness suite's renderings: what people upload, drawn deterministically from MNIST digits.

Sixteen single-digit conditions (pen on paper as a JPEG, phone photos, transparent canvases, thick and thin
pens, EXIF-rotated JPEGs, every accepted format and mode), written numbers (apart and touching) and five
kinds of non-digit. Each condition has its own random stream (seed, name), so a subset draws the same
images as the whole. Kept apart from the training renderings on purpose: pipeline/uploads.py and
pipeline/negatives.py draw with their own code, other ranges and other fonts (Pillow's own font here,
matplotlib's there), so the suite measures what training did not see. benchmarks/robustness.py measures
the served model on these; tests check that they are what they say.
"""
import zlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from testkit.images import encode


def ink_mask(digit, size, pen=0):
    """MNIST digit (white on black, uint8 28x28) -> ink coverage float [size, size] in [0, 1].

    pen > 0 thickens, pen < 0 thins the strokes. That is done at 4x resolution: at 28x28 one pixel of
    erosion wipes out MNIST's 2-3 px strokes, at 112x112 it takes off a quarter of a pixel per step."""
    big = Image.fromarray(digit).resize((112, 112), Image.BILINEAR)
    if pen > 0:
        big = big.filter(ImageFilter.MaxFilter(2 * pen + 1))
    elif pen < 0:
        big = big.filter(ImageFilter.MinFilter(-2 * pen + 1))
    return np.asarray(big.resize((size, size), Image.BILINEAR), np.float32) / 255.0


def on_paper(digit, rng, canvas=(100, 1000), share=(0.2, 0.9), pen=0, paper=(255, 255, 255), ink=(0, 0, 0)):
    """A digit drawn with `ink` on `paper` at a random size and place: uint8 RGB [H, W, 3].
    `share` is the digit box's size as a share of the canvas's shorter side."""
    w, h = (int(v) for v in rng.integers(canvas[0], canvas[1] + 1, size=2))
    size = max(28, int(min(w, h) * rng.uniform(*share)))
    mask = ink_mask(digit, size, pen)[..., None]
    page = np.empty((h, w, 3), np.float32)
    page[:] = paper
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    region = page[top:top + size, left:left + size]
    region[:] = region * (1 - mask) + np.asarray(ink, np.float32) * mask
    return np.clip(page, 0, 255).round().astype(np.uint8)


def pen_colour(rng):
    """Mostly black or blue ballpoint, sometimes red or green: all dark next to paper."""
    colours = [(15, 15, 15), (25, 35, 140), (150, 20, 25), (20, 90, 40)]
    return colours[rng.choice(len(colours), p=[0.55, 0.3, 0.1, 0.05])]


def plain(digit, rng, **kw):
    """The everyday upload that format conditions start from: pen on white-ish paper, 100-600 px."""
    paper = tuple(int(v) for v in np.clip(rng.uniform(228, 255) + rng.uniform(-6, 6, size=3), 0, 255))  # off-white
    return Image.fromarray(on_paper(digit, rng, canvas=(100, 600), paper=paper, ink=pen_colour(rng), **kw))


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


# --- the field: printed structure under the digit, pencil, coloured ink, small and tiny images ---------

def lines_page(w, h, rng, paper):
    """An RGB float page [h, w, 3] of the paper colour, to draw printed lines on."""
    page = np.empty((h, w, 3), np.float32)
    page[:] = paper
    return page


def draw_line(page, axis, at, width, colour, start=0.0, stop=1.0):
    """A printed line, anti-aliased: horizontal (axis 0: rows around `at`) or vertical (axis 1), `width`
    px wide (fractional widths cover their edge pixels partly), from `start` to `stop` of the other side."""
    n, other = page.shape[axis], page.shape[1 - axis]
    centre = np.arange(n, dtype=np.float32) + 0.5
    cover = np.clip(width / 2 + 0.5 - np.abs(centre - at), 0, 1)  # per row (or column)
    near = np.flatnonzero(cover)
    if not len(near):
        return
    across = slice(near[0], near[-1] + 1)  # only the rows (columns) it covers: a page has many lines
    cover = cover[across]
    span = slice(int(start * other), max(int(start * other) + 1, int(stop * other)))
    colour = np.asarray(colour, np.float32)
    if axis == 0:
        region = page[across, span]
        region[:] = region * (1 - cover[:, None, None]) + colour * cover[:, None, None]
    else:
        region = page[span, across]
        region[:] = region * (1 - cover[None, :, None]) + colour * cover[None, :, None]


def write(page, digit, rng, size, top, left, ink, pen=0, grain=0.0):
    """The digit's ink over whatever is printed on the page: a pen darkens, it never lightens (the
    darker of page and ink, as ink over a printed rule). grain > 0: pencil, coverage broken by paper tooth."""
    h, w = page.shape[:2]
    mask = ink_mask(digit, size, pen)
    if grain:
        tooth = np.asarray(Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(0.6)), np.float32) / 255
        mask = mask * np.clip(1 - grain + grain * 2 * tooth, 0, 1)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + size, h), min(left + size, w)
    m = mask[y0 - top:y1 - top, x0 - left:x1 - left, None]
    region = page[y0:y1, x0:x1]
    region[:] = region * (1 - m) + np.minimum(region, np.asarray(ink, np.float32)) * m


def as_photo(page, rng, tilt=3.0, blur=(0.0, 1.2), quality=(60, 95)):
    """A page as a phone or scanner gives it: sometimes a slight tilt, some blur, noise, JPEG."""
    image = Image.fromarray(np.clip(page, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        paper = tuple(int(v) for v in np.median(page.reshape(-1, 3), axis=0))
        image = image.rotate(float(rng.uniform(-tilt, tilt)), Image.BICUBIC, fillcolor=paper)
    radius = float(rng.uniform(*blur))
    if radius > 0.2:
        image = image.filter(ImageFilter.GaussianBlur(radius))
    rgb = np.asarray(image, np.float32) + rng.normal(0, rng.uniform(0, 4), size=(image.height, image.width, 3))
    return encode(Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)), "JPEG",
                  quality=int(rng.integers(quality[0], quality[1] + 1)))


def white_paper(rng):
    return tuple(float(v) for v in np.clip(rng.uniform(232, 255) + rng.uniform(-5, 5, size=3), 0, 255))


def rule_colour(rng):
    """Printed rules: mostly a light blue, sometimes grey or a darker blue."""
    kind = rng.choice(3, p=[0.6, 0.25, 0.15])
    if kind == 0:
        return (rng.uniform(120, 185), rng.uniform(160, 210), rng.uniform(215, 250))
    if kind == 1:
        grey = rng.uniform(140, 205)
        return (grey, grey, grey)
    return (rng.uniform(40, 90), rng.uniform(70, 120), rng.uniform(160, 210))


def make_ruled_paper(digit, rng):
    """A notebook page: rules every `pitch` px (the digit 0.7-1.8 pitches tall, so rules cross it), often a
    red margin line, ballpoint ink, photographed or scanned."""
    w, h = (int(v) for v in rng.integers(240, 900, size=2))
    size = int(min(w, h) * rng.uniform(0.15, 0.5))
    pitch = size / rng.uniform(0.7, 1.8)
    page = lines_page(w, h, rng, white_paper(rng))
    colour, width = rule_colour(rng), rng.uniform(0.8, 2.6)
    for at in np.arange(rng.uniform(0, pitch), h, pitch):
        draw_line(page, 0, at, width, colour)
    margin = None
    if rng.random() < 0.4:  # the red margin, sometimes a double line
        margin = rng.uniform(0.05, 0.25) * w
        red = (rng.uniform(200, 240), rng.uniform(60, 130), rng.uniform(80, 140))
        draw_line(page, 1, margin, rng.uniform(0.8, 2.5), red)
        if rng.random() < 0.3:
            draw_line(page, 1, margin + rng.uniform(3, 6), rng.uniform(0.8, 2), red)
    left_edge = int(margin + 4) if margin is not None and margin + 4 < w - size else 0
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(left_edge, w - size + 1))
    write(page, digit, rng, size, top, left, pen_colour(rng), pen=int(rng.integers(-1, 3)))
    return as_photo(page, rng)


def make_squared_paper(digit, rng):
    """Squared maths paper: a grey or blue grid, the digit 0.8-2.5 cells tall; sometimes graph paper
    (small cells, every fifth line heavier)."""
    w, h = (int(v) for v in rng.integers(240, 900, size=2))
    size = int(min(w, h) * rng.uniform(0.15, 0.5))
    graph = rng.random() < 0.25
    cell = size / (rng.uniform(2.5, 6) if graph else rng.uniform(0.8, 2.5))
    page = lines_page(w, h, rng, white_paper(rng))
    colour, width = rule_colour(rng), rng.uniform(0.7, 2.0)
    for axis, n in ((0, h), (1, w)):
        for k, at in enumerate(np.arange(rng.uniform(0, cell), n, cell)):
            draw_line(page, axis, at, width * (1.8 if graph and k % 5 == 0 else 1), colour)
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    write(page, digit, rng, size, top, left, pen_colour(rng), pen=int(rng.integers(-1, 3)))
    return as_photo(page, rng)


def make_form_box(digit, rng):
    """A digit written in a printed form field: a box (black, grey, blue or a form's red) 1-4 px wide,
    the digit 0-40% smaller than it, sometimes touching its border; sometimes a row of boxes (a comb
    field) cut by the crop, so the neighbours' sides show."""
    size = int(rng.integers(40, 240))  # the digit
    inner = int(size * rng.uniform(0.95, 1.4))  # the box, inside its border
    width = rng.uniform(1, 4)
    colour = [(20, 20, 20), (90, 90, 90), (40, 60, 150), (200, 70, 70)][rng.choice(4, p=[0.4, 0.2, 0.2, 0.2])]
    margin = int(inner * rng.uniform(0.05, 0.6))
    comb = rng.random() < 0.35
    w, h = inner + 2 * margin, inner + 2 * margin
    page = lines_page(w, h, rng, white_paper(rng))
    a, b = margin, margin + inner  # the box's sides, on both axes
    if comb:  # top and bottom run to the crop's edges; the neighbours' sides are the ones cut off
        draw_line(page, 0, a, width, colour)
        draw_line(page, 0, b, width, colour)
        for side in (a, b):
            draw_line(page, 1, side, width, colour, a / h, b / h)
    else:
        for side in (a, b):
            draw_line(page, 0, side, width, colour, a / w, b / w)
            draw_line(page, 1, side, width, colour, a / h, b / h)
    slack = max(inner - size, 0)
    top = a + int(rng.integers(0, slack + 1)) + (int(rng.integers(-size // 10, size // 10 + 1)) if slack < size * 0.1 else 0)
    left = a + int(rng.integers(0, slack + 1))
    write(page, digit, rng, size, top, left, pen_colour(rng), pen=int(rng.integers(-1, 3)))
    return as_photo(page, rng, tilt=2.0)


def make_pencil(digit, rng):
    """Pencil: faint grainy grey strokes (light to firm pressure) on white or off-white paper."""
    w, h = (int(v) for v in rng.integers(150, 800, size=2))
    size = int(min(w, h) * rng.uniform(0.25, 0.85))
    page = lines_page(w, h, rng, white_paper(rng))
    graphite = rng.uniform(70, 175)
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    write(page, digit, rng, size, top, left, (graphite,) * 3, pen=int(rng.integers(-1, 2)), grain=rng.uniform(0.2, 0.6))
    if rng.random() < 0.5:
        return as_photo(page, rng, blur=(0, 0.8))
    return encode(Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)).convert("L"), "PNG")


STICKY = [(250, 238, 125), (252, 200, 215), (205, 240, 180), (255, 205, 140), (180, 220, 250)]
INKS = [(30, 50, 170), (20, 30, 110), (190, 25, 30), (140, 20, 40), (25, 120, 50), (90, 30, 140), (0, 110, 160)]


def make_coloured_ink(digit, rng):
    """Blue, red, green or purple ballpoint on white paper, or any ink on a sticky note."""
    w, h = (int(v) for v in rng.integers(150, 800, size=2))
    size = int(min(w, h) * rng.uniform(0.25, 0.85))
    paper = STICKY[rng.integers(len(STICKY))] if rng.random() < 0.5 else white_paper(rng)
    page = lines_page(w, h, rng, np.clip(np.asarray(paper) + rng.uniform(-6, 6, size=3), 0, 255))
    ink = np.clip(np.asarray(INKS[rng.integers(len(INKS))]) + rng.uniform(-15, 15, size=3), 0, 255)
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    write(page, digit, rng, size, top, left, ink, pen=int(rng.integers(-1, 3)))
    return as_photo(page, rng, blur=(0, 1.0))


def make_low_res(digit, rng):
    """A thumbnail: the digit 10-24 px tall on an image 12-48 px a side, then either sent as it is or
    upscaled 2-10x (nearest, bilinear or bicubic) and blurred, as a screenshot of a small image or a
    blurred scan."""
    size = int(rng.integers(10, 25))
    w, h = (max(size + 1, int(size / rng.uniform(0.5, 0.95))) for _ in range(2))
    page = lines_page(w, h, rng, white_paper(rng))
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    ink = int(rng.integers(0, 70))
    write(page, digit, rng, size, top, left, (ink,) * 3, pen=int(rng.integers(0, 3)))
    image = Image.fromarray(np.clip(page, 0, 255).astype(np.uint8))
    if rng.random() < 0.75:
        factor = float(rng.uniform(2, 10))
        method = [Image.NEAREST, Image.BILINEAR, Image.BICUBIC][rng.integers(3)]
        image = image.resize((round(w * factor), round(h * factor)), method)
        if rng.random() < 0.6:
            image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 0.6) * factor)))
    if rng.random() < 0.5:
        return encode(image, "JPEG", quality=int(rng.integers(50, 92)))
    return encode(image, "PNG")


def make_photo_12mp(digit, rng):
    """A small digit on a 12 MP phone photo (4000x3000, either way up): the digit 3-8% of the shorter side,
    grey paper under a lamp, noise, JPEG."""
    w, h = (4000, 3000) if rng.random() < 0.5 else (3000, 4000)
    small_w, small_h = w // 8, h // 8  # light and paper at 1/8 scale, upscaled: a smooth page is smooth
    paper = rng.uniform(140, 220)
    yy, xx = np.mgrid[0:small_h, 0:small_w].astype(np.float32)
    angle, strength = rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.25)
    light = 1 + strength * 2 * (np.cos(angle) * (xx / small_w - 0.5) + np.sin(angle) * (yy / small_h - 0.5))
    cast = rng.uniform(0.88, 1.1, size=3)
    small = np.clip(paper * light[..., None] * cast, 0, 255).astype(np.uint8)
    image = Image.fromarray(small).resize((w, h), Image.BILINEAR)
    size = int(min(w, h) * rng.uniform(0.03, 0.08))
    pad = size // 4
    top, left = int(rng.integers(0, h - size - 2 * pad)), int(rng.integers(0, w - size - 2 * pad))
    patch = np.asarray(image.crop((left, top, left + size + 2 * pad, top + size + 2 * pad)), np.float32)
    ink = rng.uniform(20, 70)
    write(patch, digit, rng, size, pad, pad, (ink,) * 3, pen=int(rng.integers(0, 3)))
    patch += rng.normal(0, rng.uniform(1, 5), size=patch.shape)
    image.paste(Image.fromarray(np.clip(patch, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2.0)))), (left, top))
    return encode(image, "JPEG", quality=int(rng.integers(75, 93)))


def make_mnist_png(digit, rng):
    """An MNIST digit itself, as a 28x28 grayscale PNG: it must pass through unchanged."""
    return encode(Image.fromarray(digit), "PNG")


FIELD = {"ruled_paper": make_ruled_paper, "squared_paper": make_squared_paper, "form_box": make_form_box,
         "pencil": make_pencil, "coloured_ink": make_coloured_ink, "low_res": make_low_res,
         "photo_12mp": make_photo_12mp, "mnist_png": make_mnist_png}


CONDITIONS = {
    "paper_jpeg": make_paper_jpeg, "phone_photo": make_phone_photo, "rgba_canvas": make_rgba_canvas,
    "thick_pen": make_thick_pen, "thin_pen": make_thin_pen, "exif_rotated": make_exif_rotated,
    "png16": make_png16, "palette_png": make_palette_png, "gray_alpha_png": make_gray_alpha_png,
    "rgba_png": make_rgba_png, "cmyk_jpeg": make_cmyk_jpeg, "progressive_jpeg": make_progressive_jpeg,
    "gif": make_gif, "bmp": make_bmp, "tiff": make_tiff, "webp": make_webp, **FIELD,
}


# --- written numbers: f([digit, ...], rng) -> bytes -----------------------------------------------

def make_number(digits, rng, gap=(0.12, 0.7)):
    """2-6 digits written in a row on paper: one height, uneven gaps (`gap`, a share of the height),
    slight vertical jitter. The digits never touch; make_touching_number is the hard case."""
    height = int(rng.integers(40, 161))
    ink = int(rng.integers(0, 60))
    pieces = []
    for digit in digits:
        rows, cols = np.flatnonzero(digit.max(axis=1) > 40), np.flatnonzero(digit.max(axis=0) > 40)
        crop = digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # the ink, not MNIST's padding
        h = int(height * rng.uniform(0.9, 1.1))
        w = max(2, round(crop.shape[1] * h / crop.shape[0]))
        pieces.append(np.asarray(Image.fromarray(crop).resize((w, h), Image.BILINEAR), np.float32) / 255)
    gaps = [int(height * rng.uniform(*gap)) for _ in pieces[1:]]
    margin = int(height * rng.uniform(0.3, 1.5))
    width = sum(p.shape[1] for p in pieces) + sum(gaps) + 2 * margin
    page = np.zeros((int(height * 1.3) + 2 * margin, width), np.float32)  # ink coverage
    x = margin
    for i, piece in enumerate(pieces):
        y = margin + int(rng.integers(0, int(height * 0.3) - (piece.shape[0] - height) + 1))
        region = page[y:y + piece.shape[0], x:x + piece.shape[1]]
        np.maximum(region, piece[:region.shape[0], :region.shape[1]], out=region)
        x += piece.shape[1] + (gaps[i] if i < len(gaps) else 0)
    paper = float(rng.uniform(225, 255))
    gray = paper - (paper - ink) * page
    return encode(Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8)), "JPEG", quality=90)


def make_touching_number(digits, rng):
    """Digits written close enough to touch or overlap slightly: the segmenter must cut them apart.
    Reported, not a target."""
    return make_number(digits, rng, gap=(-0.12, 0.0))


# --- non-digits: f(rng) -> bytes -----------------------------------------------------------------

def canvas(rng, low=100, high=800):
    w, h = (int(v) for v in rng.integers(low, high + 1, size=2))
    paper = np.clip(rng.uniform(215, 255) + rng.uniform(-8, 8, size=3), 0, 255)
    return Image.new("RGB", (w, h), tuple(int(v) for v in paper))


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


# Letters and symbols people might draw or photograph by mistake. Left out: shapes that *are* digits in
# many hands (O o I l i S s Z z G g q b).
GLYPHS = "ABCEFHKMNPRTUVWXYaehkmnrtuvwxy#?&@%$*+=!"


def make_letters(rng):
    """One to three letters or symbols in Pillow's bundled font, dark on paper, like a digit upload."""
    image = canvas(rng)
    text = "".join(rng.choice(list(GLYPHS), size=int(rng.choice([1, 1, 1, 2, 3]))))
    size = int(min(image.size) * rng.uniform(0.3, 0.7))
    font = ImageFont.load_default(size=size)
    ImageDraw.Draw(image).text((image.width / 2, image.height / 2), text, font=font, fill=pen_colour(rng),
                               anchor="mm")
    return encode(image, "JPEG", quality=90)


# Handwriting-style fonts the suite measures with: Debian's (`make fonts`), none of them among the fonts
# training draws its negatives in (conf/negatives/default.yaml glyphs.handwriting).
HANDWRITING = ["/usr/share/fonts/truetype/fifthhorseman/dkg.ttf", "/usr/share/fonts/truetype/fifthhorseman/dkgBd.ttf",
               "/usr/share/fonts/truetype/fifthhorseman/dkgIt.ttf", "/usr/share/fonts/truetype/breip/Breip.ttf",
               "/usr/share/fonts/truetype/femkeklaver/femkeklaver.ttf",
               "/usr/share/fonts/truetype/rufscript/Rufscript010.ttf"]


def handwriting_fonts():
    from pathlib import Path

    missing = [f for f in HANDWRITING if not Path(f).is_file()]
    if missing:
        raise RuntimeError(f"the robustness suite's handwriting fonts are missing ({missing[0]}, ...): run `make fonts` "
                           "(Debian's fonts-dkg-handwriting fonts-breip fonts-femkeklaver fonts-rufscript)")
    return HANDWRITING


def make_handwritten_letters(rng):
    """One to three letters or symbols in a handwriting-style font, in pen colours, on paper, sometimes
    ruled; a JPEG. The hard kind of non-digit: a hand's letters are a digit's neighbours."""
    image = canvas(rng)
    text = "".join(rng.choice([c for c in GLYPHS if c.isalpha()], size=int(rng.choice([1, 1, 1, 2, 3]))))
    font = ImageFont.truetype(str(rng.choice(handwriting_fonts())), size=int(min(image.size) * rng.uniform(0.3, 0.8)))
    ImageDraw.Draw(image).text((image.width / 2, image.height / 2), text, font=font, fill=pen_colour(rng), anchor="mm")
    return encode(image.rotate(float(rng.uniform(-10, 10)), Image.BICUBIC, fillcolor=image.getpixel((0, 0))),
                  "JPEG", quality=int(rng.integers(70, 95)))


def make_printed_blank(rng):
    """A page with nothing written on it: ruled, squared or an empty form box. Printed lines are no digit."""
    w, h = (int(v) for v in rng.integers(150, 800, size=2))
    page = lines_page(w, h, rng, white_paper(rng))
    kind = rng.integers(3)
    colour, width = rule_colour(rng), rng.uniform(0.8, 2.5)
    if kind < 2:
        pitch = rng.uniform(12, 60)
        for axis, n in ((0, h), (1, w))[:kind + 1]:
            for at in np.arange(rng.uniform(0, pitch), n, pitch):
                draw_line(page, axis, at, width, colour)
    else:
        a, b = (rng.uniform(0.1, 0.3), rng.uniform(0.7, 0.9))
        for axis in (0, 1):
            for side in (a, b):
                draw_line(page, axis, side * page.shape[axis], rng.uniform(1, 4), (30, 30, 30), a, b)
    return as_photo(page, rng)


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
NUMBERS = {"number": make_number, "number_touching": make_touching_number}
NUMBER = "number"
ALL = [*CONDITIONS, *NUMBERS, *NON_DIGITS]


def generate(name, n, seed, x, y):
    """[(bytes, label)] for one condition. Each condition has its own random stream (seed, name), so
    running a subset gives the same images as running all of them."""
    if name in NUMBERS:
        return [(page, "".join(str(int(v)) for v in y[picks])) for picks, page in numbers(name, n, seed, x)]
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if name in NON_DIGITS:
        return [(NON_DIGITS[name](rng), None) for _ in range(n)]
    picks = rng.choice(len(x), size=n, replace=n > len(x))
    return [(CONDITIONS[name](x[i], rng), int(y[i])) for i in picks]


def picked(name, n, seed, count):
    """The indices of the digits `generate` draws for a single-digit condition (of `count` digits)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())]).choice(count, size=n, replace=n > count)


def numbers(name, n, seed, x):
    """(indices of its digits in x, page bytes) for each of n written numbers of a NUMBERS condition:
    generate's pages, with the digits kept by index."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    for _ in range(n):
        picks = rng.choice(len(x), size=int(rng.integers(2, 7)))
        yield picks, NUMBERS[name](list(x[picks]), rng)
