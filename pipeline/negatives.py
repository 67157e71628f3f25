"""Stage `negatives`: things people upload that are not digits, as the server's normaliser sees them.

    python -m pipeline.negatives

A model that only ever saw digits calls a letter, a doodle or a photo of a shirt "7, 99% sure". The
variants with `reject: true` learn an eleventh class, "not a digit", from these. Each example is drawn
as a whole upload (a page with letters, a scribble, shapes, a texture) and then goes through
digits.normalise, the exact code that turns a real upload into the model's 28x28: the model learns
what the server will actually show it. The mix (page sizes, paper and ink, glyph sizes, shares) is
conf/negatives/default.yaml's, in params.yaml. Writes data/drawn/negatives/{train,val}.npy (uint8
[N, 28, 28], white on black like MNIST) and {train,val}_kind.npy (which generator made each).
Plain .npy, not .npz: the bytes depend only on the content, so when digits/ changes without changing
what normalise() outputs, the rerun writes identical files and DVC retrains nothing.

Fonts are matplotlib's bundled DejaVu, STIX and Computer Modern, and Debian's handwriting-style Comic Neue,
Because We Had To, Dancing Script, Humor Sans and Kaushan Script (`make fonts`). The robustness suite
(testkit/uploads.py) draws its letters in Pillow's own font and in other handwriting fonts (dkg, Breip,
Femkeklaver, Rufscript), which training never sees.
"""
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from digits.blobs import components
from digits.normalise import normalise
from pipeline.params import load

OUT_DIR = Path("data/drawn/negatives")


class FontError(RuntimeError):
    pass


def fonts(cfg):
    """(print fonts, handwriting fonts): matplotlib's bundled ones, and the Debian handwriting-style fonts
    the configuration names (`make fonts` installs them). A missing one is an error, not a quietly
    different training set."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    printed = sorted(str(p) for p in folder.glob("*.ttf")
                     if p.name.startswith(("DejaVu", "STIXGeneral", "cmr", "cmss", "cmti", "cmb")))
    handwriting = list(cfg["glyphs"]["handwriting"]["fonts"])
    missing = [f for f in handwriting if not Path(f).is_file()]
    if missing:
        raise FontError(f"negatives: {len(missing)} handwriting font(s) missing, e.g. {missing[0]}: run `make fonts` "
                        "(Debian's fonts-comic-neue fonts-bwht fonts-dancingscript fonts-humor-sans "
                        "fonts-kaushanscript), or name others in conf/negatives/default.yaml glyphs.handwriting.fonts")
    return printed, handwriting


def page(rng, cfg):
    """A blank page of the configured size and paper level (0-255), and the ink's level on it."""
    low, high = cfg["page_px"]
    w, h = (int(v) for v in rng.integers(low, high + 1, size=2))
    return Image.new("L", (w, h), int(rng.uniform(*cfg["paper"]))), int(rng.uniform(*cfg["ink"]))


def glyphs(rng, cfg, font_files):
    """One to three letters or symbols in a random font (print or handwriting-style), size, weight and tilt."""
    image, ink = page(rng, cfg)
    g = cfg["glyphs"]
    printed, handwriting = font_files
    hand = g["handwriting"]
    if rng.random() < hand["share"]:  # their glyphs: letters and ASCII symbols, no tofu boxes
        alphabet, file = hand["alphabet"], rng.choice(handwriting)
    else:
        alphabet, file = g["alphabet"], rng.choice(printed)
    text = "".join(rng.choice(list(alphabet), size=int(rng.choice(g["count"]))))
    font = ImageFont.truetype(str(file), size=int(min(image.size) * rng.uniform(*g["size"])))
    layer = Image.new("L", image.size, 0)
    ImageDraw.Draw(layer).text((image.width / 2, image.height / 2), text, font=font, fill=255, anchor="mm",
                               stroke_width=int(rng.integers(g["stroke_px"][0], g["stroke_px"][1] + 1)), stroke_fill=255)
    layer = layer.rotate(float(rng.uniform(-g["rotation_deg"], g["rotation_deg"])), Image.BILINEAR)
    layer = squeezed(layer, float(rng.uniform(*g["squeeze"])))  # condensed and wide faces: more than three families
    return Image.composite(Image.new("L", image.size, ink), image, layer)


def squeezed(layer, factor):
    """The layer's content scaled horizontally by factor about its centre, on a layer of the same size."""
    w, h = layer.size
    scaled = layer.resize((max(1, round(w * factor)), h), Image.BILINEAR)
    out = Image.new("L", layer.size, 0)
    out.paste(scaled, ((w - scaled.width) // 2, 0))
    return out


def scribble(rng, cfg, _):
    """A doodle: a smooth random curve with many turns, a zigzag, a spiral or a cross-hatch."""
    image, ink = page(rng, cfg)
    w, h = image.size
    draw = ImageDraw.Draw(image)
    width = max(2, int(min(w, h) * rng.uniform(*cfg["scribble"]["width"])))
    kind = rng.integers(4)
    if kind == 0:  # random walk, smoothed: many turns, not a single stroke that could be a 1 or a 7
        points = np.cumsum(rng.normal(0, 0.25, size=(int(rng.integers(6, 16)), 2)), axis=0)
        t = np.linspace(0, len(points) - 1, 200)
        curve = np.stack([np.interp(t, np.arange(len(points)), points[:, i]) for i in (0, 1)], axis=1)
    elif kind == 1:  # zigzag
        n = int(rng.integers(4, 10))
        curve = np.stack([np.linspace(0, 1, n), np.tile([0.0, 1.0], n)[:n] * rng.uniform(0.3, 1)], axis=1)
    elif kind == 2:  # spiral
        t = np.linspace(0, rng.uniform(4, 7) * np.pi, 200)  # two turns or more: not a 6
        curve = np.stack([t * np.cos(t), t * np.sin(t)], axis=1)
    else:  # cross-hatching: a few roughly horizontal and roughly vertical strokes
        for _ in range(int(rng.integers(2, 5))):
            a, b = sorted(rng.uniform(0.1, 0.9, 2))
            y, x = rng.uniform(0.1, 0.9, 2)
            draw.line([(a * w, y * h), (b * w, (y + rng.uniform(-0.1, 0.1)) * h)], fill=ink, width=width)
            draw.line([(x * w, a * h), ((x + rng.uniform(-0.1, 0.1)) * w, b * h)], fill=ink, width=width)
        return image
    curve = (curve - curve.min(axis=0)) / np.maximum(np.ptp(curve, axis=0), 1e-6)
    curve = 0.1 + 0.8 * curve
    draw.line([(float(x * w), float(y * h)) for x, y in curve], fill=ink, width=width, joint="curve")
    return image


def shapes(rng, cfg, _):
    """Filled or outlined shapes, one to five. A lone outlined ellipse is a zero, so ellipses are filled
    or come with company."""
    image, ink = page(rng, cfg)
    draw = ImageDraw.Draw(image)
    w, h = image.size
    count = int(rng.integers(cfg["shapes"]["count"][0], cfg["shapes"]["count"][1] + 1))
    for _ in range(count):
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        r = rng.uniform(*cfg["shapes"]["radius"]) * min(w, h)
        filled = rng.random() < 0.5
        kw = {"fill": ink if filled else None, "outline": ink, "width": max(2, int(r * rng.uniform(0.08, 0.3)))}
        kind = rng.integers(5)
        if kind == 0:
            draw.rectangle([cx - r, cy - r * rng.uniform(0.3, 1), cx + r, cy + r * rng.uniform(0.3, 1)], **kw)
        elif kind == 1:
            draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], **kw)
        elif kind == 2:
            draw.regular_polygon((cx, cy, r), int(rng.integers(5, 9)), rotation=float(rng.uniform(0, 90)), **kw)
        elif kind == 3:  # a star
            angles = np.linspace(0, 2 * np.pi, 11)[:-1] + rng.uniform(0, np.pi)
            radii = np.where(np.arange(10) % 2, r * 0.45, r)
            draw.polygon([(cx + q * np.cos(a), cy + q * np.sin(a)) for q, a in zip(radii, angles)], **kw)
        elif filled or count > 1:
            draw.ellipse([cx - r, cy - r * rng.uniform(0.5, 1), cx + r, cy + r], **{**kw, "fill": ink if filled else None})
    return image


def texture(rng, cfg, _):
    """What a camera sees when it is not pointed at writing: noise, fabric, tiles, blobs of light."""
    # Sometimes a long strip, either way up: the normaliser squeezes a narrow photo of noise into a bar.
    # One that comes out as solid as a marker stroke is a "1" and is left out (looks_like_a_one); a dim,
    # grainy bar is not, and without strips the model called those "1" (benchmark noise, seed 5, ad hoc).
    t = cfg["texture"]
    w = int(rng.integers(t["width_px"][0], t["width_px"][1] + 1))
    aspect = rng.uniform(*t["aspect"]) if rng.random() < t["aspect_share"] else rng.uniform(*t["strip"]) ** rng.choice([-1, 1])
    h = max(8, int(w * aspect))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = rng.integers(6)
    if kind == 0:
        value = rng.random((h, w))
    elif kind == 1:
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 40)
        value = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    elif kind == 2:
        cell = rng.uniform(5, 50)
        value = ((xx // cell + yy // cell) % 2).astype(np.float32)
    elif kind == 3:
        value = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(2, 9))):
            cy, cx, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.03, 0.3) * max(w, h)
            value += rng.uniform(-1, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    elif kind == 4:  # speckle: dust, a grainy photo of a table
        value = (rng.random((h, w)) < rng.uniform(0.01, 0.2)).astype(np.float32)
    else:  # blocks of random grey: a pixelated or heavily compressed photo
        block = int(rng.integers(3, 30))
        value = rng.random((h // block + 1, w // block + 1)).repeat(block, axis=0).repeat(block, axis=1)[:h, :w]
    value = (value - value.min()) / max(float(np.ptp(value)), 1e-6)
    value = value * rng.uniform(0.3, 1) + rng.normal(0, 0.03, size=value.shape)
    image = Image.fromarray((np.clip(value, 0, 1) * 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.5))))


GENERATORS = {"glyphs": glyphs, "scribble": scribble, "shapes": shapes, "texture": texture}


# A long, near-upright mark is a 1 in someone's hand, whatever drew it: a bracket, a "J", a bar, one
# stripe of a texture. Taught as "not a digit", such marks made the model reject real 1s, so they are
# left out of the non-digits. `one` is params.yaml's negatives.one (conf/negatives/default.yaml says
# which marks and why).
def looks_like_a_one(image28, one):
    """A 28x28 (uint8 0-255 or float 0-1, white ink on black) whose ink is one long, near-vertical,
    pen-bright mark with no dot past its end."""
    image = np.asarray(image28)
    ink = image.astype(np.float64) / (255.0 if image.dtype == np.uint8 else 1.0)
    return bool(ink.max() >= one["min_peak"] and long_and_upright(ink, one) and not has_a_dot(ink, one))


def long_and_upright(ink, one):
    """Whether the ink's principal axes are over `elongation` apart, the long one near vertical."""
    mass = ink.sum()
    if not mass:
        return False
    yy, xx = np.mgrid[0:ink.shape[0], 0:ink.shape[1]]
    dy, dx = yy - (ink * yy).sum() / mass, xx - (ink * xx).sum() / mass
    syy, sxx, sxy = ((ink * a * b).sum() / mass for a, b in ((dy, dy), (dx, dx), (dx, dy)))
    half_spread = np.hypot((syy - sxx) / 2, sxy)
    major, minor = (syy + sxx) / 2 + half_spread, max((syy + sxx) / 2 - half_spread, 1e-9)
    tilt = np.degrees(0.5 * abs(np.arctan2(2 * sxy, syy - sxx)))  # the long axis's angle from vertical
    return bool(np.sqrt(major / minor) > one["elongation"] and tilt < one["tilt_deg"])


def has_a_dot(ink, one):
    """Whether a short piece of ink lies past one end of the largest, in line with it: the dot of a "!"
    or "?". Not a bit of stray ink beside the stroke, as 0.6% of MNIST's training 1s have."""
    mark, *others = components(np.where(ink > one["dot_ink"], ink, 0), one["dot_share"])
    return any(p.h < one["dot_height"] * mark.h and (p.y0 >= mark.y1 or p.y1 <= mark.y0)
               and p.x0 < mark.x1 and p.x1 > mark.x0 for p in others)


BLOCK = 200  # images drawn from one random stream: the unit of work a process takes


def generate(n, seed, cfg, workers=None):
    """(x uint8 [n, 28, 28] as the normaliser outputs them, kind names [n]), drawn as cfg (params.yaml's
    `negatives`) says. Skipped: blank results (the server answers those "blank" before the model runs)
    and marks that look like a 1. Drawn in blocks of BLOCK, each from its own random stream (seed, block),
    on all cores: the result does not depend on how many there are."""
    blocks = [(min(BLOCK, n - start), [*seed, start // BLOCK], cfg) for start in range(0, n, BLOCK)]
    if len(blocks) == 1 or workers == 1:
        drawn = [draw_block(*block) for block in blocks]
    else:
        with ProcessPoolExecutor(min(workers or os.cpu_count(), len(blocks))) as pool:
            drawn = list(pool.map(draw_block, *zip(*blocks)))
    return np.concatenate([x for x, _ in drawn]), np.concatenate([kind for _, kind in drawn])


def draw_block(n, seed, cfg):
    rng = np.random.default_rng(seed)
    font_files = fonts(cfg)
    kinds, images = list(GENERATORS), []
    names = []
    while len(images) < n:
        kind = kinds[len(images) % len(kinds)]
        gray = np.asarray(GENERATORS[kind](rng, cfg, font_files), np.float32) / 255.0
        if rng.random() < cfg["inverted"]:  # light on dark: chalk, a screenshot in dark mode
            gray = 1.0 - gray
        image28 = normalise(gray)
        if image28.any() and not looks_like_a_one(image28, cfg["one"]):
            images.append((image28 * 255).round().astype(np.uint8))
            names.append(kind)
    return np.stack(images), np.array(names)


def load_split(name, directory=OUT_DIR):
    return np.load(Path(directory) / f"{name}.npy")


def main():
    params = load()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for split, stream in (("train", 1), ("val", 2)):
        x, kind = generate(params["negatives"][split], [params["seed"], stream], params["negatives"])
        for path, array in ((OUT_DIR / f"{split}.npy", x), (OUT_DIR / f"{split}_kind.npy", kind)):
            partial = path.with_suffix(".partial.npy")
            np.save(partial, array)
            partial.replace(path)
        print(f"negatives: {split}: {len(x)} ({', '.join(f'{k} {(kind == k).sum()}' for k in GENERATORS)})")


if __name__ == "__main__":
    main()
