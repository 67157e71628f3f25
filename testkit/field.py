"""The robustness suite's field conditions (issue 29): digits written on ruled and squared paper and in
form boxes, in pencil and coloured ink, as thumbnails and on 12 MP photos, MNIST's own 28x28 PNGs; and two
non-digits of the same world, letters in handwriting fonts and empty printed pages. Drawn with this code
only (anti-aliased lines of fractional width under the pen), apart from training's pipeline/uploads.py,
which draws its printed pages with Pillow's line tool. Each f(digit uint8 28x28, rng) -> bytes, or
f(rng) -> bytes for the non-digits; testkit/uploads.py lists them with the other conditions.
"""
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from testkit.images import encode, png_bytes
from testkit.pages import GLYPHS, canvas, ink_mask, pen_colour


def lines_page(w, h, paper):
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
    page = lines_page(w, h, white_paper(rng))
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
    page = lines_page(w, h, white_paper(rng))
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
    page = lines_page(w, h, white_paper(rng))
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
    page = lines_page(w, h, white_paper(rng))
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
    page = lines_page(w, h, np.clip(np.asarray(paper) + rng.uniform(-6, 6, size=3), 0, 255))
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
    page = lines_page(w, h, white_paper(rng))
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
    return png_bytes(digit)


FIELD = {"ruled_paper": make_ruled_paper, "squared_paper": make_squared_paper, "form_box": make_form_box,
         "pencil": make_pencil, "coloured_ink": make_coloured_ink, "low_res": make_low_res,
         "photo_12mp": make_photo_12mp, "mnist_png": make_mnist_png}


# Handwriting-style fonts the suite measures with: Debian's (`make fonts`), none of them among the fonts
# training draws its negatives in (conf/negatives/default.yaml glyphs.handwriting).
HANDWRITING = ["/usr/share/fonts/truetype/fifthhorseman/dkg.ttf", "/usr/share/fonts/truetype/fifthhorseman/dkgBd.ttf",
               "/usr/share/fonts/truetype/fifthhorseman/dkgIt.ttf", "/usr/share/fonts/truetype/breip/Breip.ttf",
               "/usr/share/fonts/truetype/femkeklaver/femkeklaver.ttf",
               "/usr/share/fonts/truetype/rufscript/Rufscript010.ttf"]


def handwriting_fonts():
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
    page = lines_page(w, h, white_paper(rng))
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
