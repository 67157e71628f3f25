"""Stage `uploads`: training digits drawn the ways people upload them, as the server's normaliser sees them.

    python -m pipeline.uploads

MNIST's own 28x28s are tidy. What the server hands the model after digits/ has made a 28x28 out
of a marker on grey paper, a fine liner, a phone photo under a lamp or a JPEG is not: loops a fat
pen filled in and the normaliser thinned back, faint grey strokes, blur, a tilted page. The variants
with `uploads: true` also train on these. Each is a *training* digit (never a validation or test one)
drawn once as a random upload, encoded as a PNG or JPEG, then decoded and normalised by the server's
own code: the model learns what the server will actually show it.

The mix of pens, papers, printed rules, grids and boxes, lighting, thumbnails and encodings
(conf/uploads/default.yaml, in params.yaml) covers the kinds of upload issues #4 and #29 name. It is drawn here with its own code and wider ranges, independently of
the robustness suite (testkit/uploads.py), which measures on test digits. Writes
data/drawn/uploads/train.npy (uint8 [N, 28, 28], white on black) and train_labels.npy.
Plain .npy as in pipeline/negatives.py: unchanged outputs give identical files, and DVC retrains nothing.
"""
import io
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from digits.decode import decode
from digits.normalise import normalise
from pipeline.params import load
from pipeline.preprocess import load_split

OUT_DIR = Path("data/drawn/uploads")


def pen(digit, rng, cfg):
    """MNIST digit (uint8 28x28) -> ink coverage at 112x112, strokes made thinner or fatter. At 4x one
    step of a 3x3 filter moves each edge a quarter pixel of the 28x28: -3 is a fine liner, +7 a marker
    that fills small loops."""
    big = Image.fromarray(digit).resize((112, 112), Image.BILINEAR)
    steps = int(rng.integers(cfg["pen_steps"][0], cfg["pen_steps"][1] + 1))
    for _ in range(abs(steps)):
        big = big.filter(ImageFilter.MaxFilter(3) if steps > 0 else ImageFilter.MinFilter(3))
    return big


def page(ink112, rng, cfg):
    """The digit on a page: (float32 gray [H, W] in 0..255, the digit's coverage on the page)."""
    size = int(rng.integers(cfg["box_px"][0], cfg["box_px"][1] + 1))  # the digit's box
    # The page: the box a share of each side, at most page_px (plenty, and cheap to draw).
    w, h = (min(max(size, int(size / rng.uniform(*cfg["box_share"]))), cfg["page_px"]) for _ in range(2))
    mask = np.zeros((h, w), np.float32)
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    mask[top:top + size, left:left + size] = np.asarray(ink112.resize((size, size), Image.BILINEAR), np.float32) / 255
    paper = np.float32(rng.uniform(*cfg["paper"]))
    ink = np.float32(rng.uniform(0, max(paper - cfg["contrast"], 1)))  # a pen darker than its paper
    return paper - (paper - ink) * mask, mask


def printed(gray, mask, rng, cfg):
    """Printed structure under the digit, drawn with Pillow's line tool: notebook rules (sometimes a margin),
    a squared or dotted grid, or a form box around the digit's ink. The pen goes over the print: the
    darker of the two."""
    p = cfg["printed"]
    h, w = gray.shape
    rows, cols = np.flatnonzero(mask.max(axis=1) > 0.2), np.flatnonzero(mask.max(axis=0) > 0.2)
    if not len(rows):
        return gray
    ink_h = rows[-1] - rows[0] + 1
    sheet = Image.new("L", (w, h), 255)
    draw = ImageDraw.Draw(sheet)
    level = int(rng.uniform(*p["level"]))  # how dark the print is on white paper
    width = int(rng.integers(p["width_px"][0], p["width_px"][1] + 1))
    kind = rng.choice(["rules", "grid", "dots", "box"], p=p["kinds"])
    if kind in ("rules", "grid", "dots"):
        pitch = max(4.0, ink_h / rng.uniform(*p["pitch_per_digit"]))
        for y in np.arange(rng.uniform(0, pitch), h, pitch):
            if kind == "dots":
                for x in np.arange(rng.uniform(0, pitch), w, pitch):
                    draw.ellipse([x - width, y - width, x + width, y + width], fill=level)
            else:
                draw.line([(0, y), (w, y)], fill=level, width=width)
        if kind == "grid":
            for x in np.arange(rng.uniform(0, pitch), w, pitch):
                draw.line([(x, 0), (x, h)], fill=level, width=width)
        if kind == "rules" and rng.random() < p["margin"]:
            x = rng.uniform(0.03, 0.3) * w
            draw.line([(x, 0), (x, h)], fill=int(rng.uniform(*p["level"])), width=width)
    else:  # a box around the digit's ink, a little larger or cutting into it
        pad = ink_h * rng.uniform(*p["box_margin"])
        x0, x1 = cols[0] - pad * rng.uniform(0.5, 1.5), cols[-1] + pad * rng.uniform(0.5, 1.5)
        y0, y1 = rows[0] - pad * rng.uniform(0.5, 1.5), rows[-1] + pad * rng.uniform(0.5, 1.5)
        draw.rectangle([x0, y0, x1, y1], outline=level, width=width)
        if rng.random() < p["comb"]:
            draw.line([(0, y0), (w, y0)], fill=level, width=width)
            draw.line([(0, y1), (w, y1)], fill=level, width=width)
    paper = float(np.median(gray))
    print_on_paper = paper * np.asarray(sheet, np.float32) / 255
    return np.minimum(gray, print_on_paper)


def thumbnail(gray, mask, rng, cfg):
    """A low-resolution copy: the page shrunk until the digit is a few dozen pixels or fewer, then often
    scaled back up (nearest, bilinear or bicubic) and blurred, as a screenshot of a small image."""
    t = cfg["thumbnail"]
    h, w = gray.shape
    rows = np.flatnonzero(mask.max(axis=1) > 0.2)
    scale = min(1.0, rng.uniform(*t["digit_px"]) / max(rows[-1] - rows[0] + 1 if len(rows) else h, 1))
    small = Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8)).resize(
        (max(4, round(w * scale)), max(4, round(h * scale))), Image.BOX)
    if rng.random() < t["upscaled"]:
        factor = rng.uniform(*t["upscale"])
        small = small.resize((round(small.width * factor), round(small.height * factor)),
                             [Image.NEAREST, Image.BILINEAR, Image.BICUBIC][int(rng.integers(3))])
        small = small.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 0.6) * factor)))
    return np.asarray(small, np.float32)


def photograph(gray, rng, cfg):
    """A phone photo of the page: a tilt, focus blur, light falling off across it, sensor noise."""
    photo = cfg["photo"]
    paper = float(np.median(gray))
    image = Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8)).rotate(
        float(rng.uniform(-photo["tilt_deg"], photo["tilt_deg"])), Image.BILINEAR, expand=True, fillcolor=int(paper))
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(*photo["blur"]))))
    gray = np.asarray(image, np.float32)
    h, w = gray.shape
    angle, strength = rng.uniform(0, 2 * np.pi), rng.uniform(*photo["light_falloff"])
    across = np.cos(angle) * (np.arange(w, dtype=np.float32) / w - 0.5)
    down = np.sin(angle) * (np.arange(h, dtype=np.float32) / h - 0.5)
    gray *= 1 + 2 * strength * (across[None, :] + down[:, None])
    gray += rng.standard_normal(gray.shape, dtype=np.float32) * rng.uniform(*photo["noise"])
    return gray


def draw(digit, seed, cfg):
    """One training digit as a random upload -> its encoded bytes. Each digit has its own random stream,
    so the result does not depend on how the work is split between processes."""
    rng = np.random.default_rng(seed)
    ink112 = pen(digit, rng, cfg)
    if rng.random() < cfg["canvas"]:  # a transparent canvas drawing: black strokes, alpha is the ink
        _, mask = page(ink112, rng, cfg)
        rgba = np.zeros(mask.shape + (4,), np.uint8)
        rgba[..., 3] = (mask * 255).round().astype(np.uint8)
        return encode(Image.fromarray(rgba, "RGBA"), "PNG", compress_level=1)
    gray, mask = page(ink112, rng, cfg)
    if rng.random() < cfg["printed"]["share"]:
        gray = printed(gray, mask, rng, cfg)
    if rng.random() < cfg["photo"]["share"]:
        gray = photograph(gray, rng, cfg)
    if rng.random() < cfg["thumbnail"]["share"]:
        gray = thumbnail(gray, mask, rng, cfg)
    if rng.random() < cfg["inverted"]:  # chalk on a blackboard, a screenshot in dark mode
        gray = 255 - gray
    image = Image.fromarray(np.clip(gray, 0, 255).round().astype(np.uint8))
    if rng.random() < cfg["jpeg"]["share"]:
        return encode(image, "JPEG", quality=int(rng.integers(cfg["jpeg"]["quality"][0], cfg["jpeg"]["quality"][1] + 1)))
    return encode(image, "PNG", compress_level=1)  # the same pixels, 5x faster to write


def encode(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def as_seen(job):
    """(digit, seed, cfg) -> the uint8 28x28 the server would hand the model (all zeros for a blank)."""
    return (normalise(decode(draw(*job))) * 255).round().astype(np.uint8)


def generate(x, y, n, seed, cfg, workers=None):
    """n training digits (x uint8 [N, 28, 28], labels y) drawn as uploads as cfg (params.yaml's `uploads`)
    says -> (images, labels). Uploads the server would answer "blank" (the model never sees those) are
    left out."""
    picks = np.random.default_rng(seed).choice(len(x), size=min(n, len(x)), replace=False)
    jobs = [(x[i], [*seed, int(i)], cfg) for i in picks]
    with ProcessPoolExecutor(workers or os.cpu_count()) as pool:
        images = np.stack(list(pool.map(as_seen, jobs, chunksize=256)))
    seen = images.reshape(len(images), -1).any(axis=1)
    return images[seen], y[picks][seen]


def main():
    params = load()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    x, y = load_split("train")
    images, labels = generate(x, y, params["uploads"]["train"], [params["seed"], 3], params["uploads"])
    for name, array in (("train", images), ("train_labels", labels)):
        path = OUT_DIR / f"{name}.npy"
        partial = path.with_suffix(".partial.npy")
        np.save(partial, array)
        partial.replace(path)
    print(f"uploads: train: {len(images)} training digits drawn as uploads "
          f"({params['uploads']['train'] - len(images)} came out blank and were left out)")


def load_train(directory=OUT_DIR):
    return np.load(Path(directory) / "train.npy"), np.load(Path(directory) / "train_labels.npy")


if __name__ == "__main__":
    main()
