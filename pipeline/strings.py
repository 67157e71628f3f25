"""Stage `strings`: written numbers for the reader, as the server's line code sees them.

    python -m pipeline.strings

The reader (pipeline/reader.py) learns whole strings, touching and overlapping digits included, from
numbers composed here out of MNIST digits: 1-8 digits, gaps from clearly apart to overlapping by a fifth
of a digit, slant and size jitter within a string, a drifting baseline, one pen per string (conf/strings/
default.yaml). Each string is then drawn as an upload the way the `uploads` stage draws a digit (paper,
printed rules, grids and boxes, photos, thumbnails, canvases, inverted pages, JPEG: the `uploads` block),
encoded, decoded and turned into the reader's strip by digits/line.py, the server's own code. A share of
pages are the negatives stage's non-digits (letters, symbols, scribbles, shapes, textures), labelled "?".

Training strings use training digits, validation strings the validation split, test strings (reported by
the evaluate_reader stage, never chosen on) the test split. Writes data/drawn/strings/{split}_strips.npy
(uint8 [28, total width]: the strips side by side), {split}_widths.npy, {split}_labels.npy (the text,
"?" for not a digit) and {split}_gaps.npy (apart, touching, overlapping, mixed, single or none). Plain
.npy: identical inputs give identical files. Every string has its own random stream.
"""
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from digits import line as lines
from digits.decode import decode
from pipeline import negatives, uploads
from pipeline.params import load
from pipeline.preprocess import load_split as load_digits

OUT_DIR = Path("data/drawn/strings")
SPLITS = {"train": 1, "val": 2, "test": 3}  # each split's random stream
BLOCK = 250


def inked(digit, steps):
    """An MNIST digit (uint8 28x28) -> its ink at 112 px, pen `steps` thinner or fatter, cropped to the ink."""
    big = Image.fromarray(digit).resize((112, 112), Image.BILINEAR)
    for _ in range(abs(steps)):
        big = big.filter(ImageFilter.MaxFilter(3) if steps > 0 else ImageFilter.MinFilter(3))
    ink = np.asarray(big)
    rows, cols = np.flatnonzero(ink.max(axis=1) > 40), np.flatnonzero(ink.max(axis=0) > 40)
    if not len(rows):
        return None
    return Image.fromarray(ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])


def gap_kind(rng, cfg):
    g = cfg["gaps"]
    return str(rng.choice(g["kinds"], p=g["shares"]))


def compose(digits, rng, cfg, pen_steps):
    """Digits (uint8 28x28 each) -> (ink coverage [H, W] in [0, 1] of the written number, its gap kind)."""
    height = float(rng.uniform(*cfg["height_px"]))
    steps = int(rng.integers(pen_steps[0], pen_steps[1] + 1))
    kind = gap_kind(rng, cfg) if len(digits) > 1 else "single"
    slant = np.tan(np.radians(rng.uniform(-cfg["slant_deg"], cfg["slant_deg"])))
    pieces = []
    for digit in digits:
        crop = inked(digit, steps)
        if crop is None:
            continue
        h = max(4, round(height * rng.uniform(1 - cfg["size_jitter"], 1 + cfg["size_jitter"])))
        w = max(2, round(crop.width * h / crop.height))
        piece = crop.resize((w, h), Image.BILINEAR)
        shear = slant + np.tan(np.radians(rng.uniform(-cfg["slant_jitter_deg"], cfg["slant_jitter_deg"])))
        extra = int(abs(shear) * h) + 1  # a slanted digit leans out of its box: widen it
        piece = piece.transform((w + extra, h), Image.AFFINE,
                                (1, shear, -extra if shear > 0 else 0, 0, 1, 0), Image.BILINEAR)
        array = np.asarray(piece, np.float32) / 255
        cols = np.flatnonzero(array.max(axis=0) > 0.15)
        pieces.append(array[:, cols[0]:cols[-1] + 1] if len(cols) else array)
    if not pieces:
        return None, kind
    gaps = []
    for left, right in zip(pieces, pieces[1:]):
        each = gap_kind(rng, cfg) if kind == "mixed" else kind
        while each == "mixed":
            each = gap_kind(rng, cfg)
        low, high = cfg["gaps"][each]
        share = rng.uniform(low, high)
        gaps.append(round(share * height) if each == "apart" else round(share * min(left.shape[1], right.shape[1])))
    margin = [round(height * rng.uniform(*cfg["margin"])) for _ in range(4)]
    drift = rng.uniform(-cfg["baseline_drift"], cfg["baseline_drift"]) * height
    tallest = max(p.shape[0] for p in pieces)
    slack = int(abs(drift) + cfg["baseline_jitter"] * height) + 1
    width = sum(p.shape[1] for p in pieces) + sum(gaps) + margin[0] + margin[1]
    page = np.zeros((tallest + 2 * slack + margin[2] + margin[3], max(width, 8)), np.float32)
    x = margin[0]
    for k, piece in enumerate(pieces):
        along = k / max(len(pieces) - 1, 1)
        bottom = margin[2] + slack + tallest + drift * (along - 0.5) + rng.uniform(-1, 1) * cfg["baseline_jitter"] * height
        y = int(np.clip(round(bottom - piece.shape[0]), 0, page.shape[0] - piece.shape[0]))
        x = max(0, x)
        region = page[y:y + piece.shape[0], x:x + piece.shape[1]]
        np.maximum(region, piece[:region.shape[0], :region.shape[1]], out=region)
        x += piece.shape[1] + (gaps[k] if k < len(gaps) else 0)
    return page, kind


def as_upload(mask, rng, cfg):
    """A written number's ink coverage -> an encoded upload, drawn as pipeline/uploads.py draws a digit."""
    if rng.random() < cfg["canvas"]:  # strokes on a transparent canvas
        rgba = np.zeros(mask.shape + (4,), np.uint8)
        rgba[..., 3] = (mask * 255).round().astype(np.uint8)
        return uploads.encode(Image.fromarray(rgba, "RGBA"), "PNG", compress_level=1)
    paper = np.float32(rng.uniform(*cfg["paper"]))
    ink = np.float32(rng.uniform(0, max(paper - cfg["contrast"], 1)))
    gray = paper - (paper - ink) * mask
    if rng.random() < cfg["printed"]["share"]:
        gray = uploads.printed(gray, mask, rng, cfg)
    if rng.random() < cfg["photo"]["share"]:
        gray = uploads.photograph(gray, rng, cfg)
    if rng.random() < cfg["thumbnail"]["share"]:
        gray = uploads.thumbnail(gray, mask, rng, cfg)
    if rng.random() < cfg["inverted"]:
        gray = 255 - gray
    image = Image.fromarray(np.clip(gray, 0, 255).round().astype(np.uint8))
    if rng.random() < cfg["jpeg"]["share"]:
        return uploads.encode(image, "JPEG", quality=int(rng.integers(cfg["jpeg"]["quality"][0], cfg["jpeg"]["quality"][1] + 1)))
    return uploads.encode(image, "PNG", compress_level=1)


def non_number(rng, params, font_files):
    """One of the negatives stage's pages (letters, symbols, scribbles, shapes, textures) as grayscale."""
    cfg = params["negatives"]
    kinds = list(negatives.GENERATORS)
    gray = np.asarray(negatives.GENERATORS[kinds[int(rng.integers(len(kinds)))]](rng, cfg, font_files), np.float32) / 255
    return 1 - gray if rng.random() < cfg["inverted"] else gray


def pages(x, y, seed, params):
    """Endless (grayscale page [H, W] in [0, 1], text, gap kind) from the digits x (labels y), from the
    random stream `seed`: what draw_block turns into strips, and what tuning/ reads whole."""
    rng = np.random.default_rng(seed)
    cfg = params["strings"]
    # A whole line tilted as far as a lone digit may be would stand much taller than its digits.
    look = {**params["uploads"], "photo": {**params["uploads"]["photo"], "tilt_deg": cfg["photo_tilt_deg"]}}
    font_files = negatives.fonts(params["negatives"])
    while True:
        if rng.random() < cfg["non_numbers"]:
            yield non_number(rng, params, font_files), "?", "none"
            continue
        picks = rng.choice(len(x), size=int(rng.integers(cfg["length"][0], cfg["length"][1] + 1)))
        mask, kind = compose(list(x[picks]), rng, cfg, look["pen_steps"])
        if mask is not None:
            yield decode(as_upload(mask, rng, look)), "".join(str(int(v)) for v in y[picks]), kind


def draw_block(x, y, n, seed, params):
    """n strings from the digits x (labels y), from the random stream `seed`: (strips, texts, gap kinds)."""
    strips, texts, kinds = [], [], []
    for gray, text, kind in pages(x, y, seed, params):
        if len(strips) == n:
            break
        found = lines.line(gray)
        if found is None:  # the server answers "blank" before the reader runs
            continue
        strips.append((found.image * 255).round().astype(np.uint8))
        texts.append(text)
        kinds.append(kind)
    return strips, texts, kinds


def generate(x, y, n, seed, params, workers=None):
    """n strings in blocks of BLOCK, each block from its own random stream (seed, block), on all cores."""
    blocks = [(x, y, min(BLOCK, n - start), [*seed, start // BLOCK], params) for start in range(0, n, BLOCK)]
    with ProcessPoolExecutor(min(workers or os.cpu_count(), len(blocks))) as pool:
        drawn = list(pool.map(draw_block, *zip(*blocks)))
    return [item for block in drawn for item in block[0]], [t for b in drawn for t in b[1]], [k for b in drawn for k in b[2]]


def save(split, strips, texts, kinds, out_dir=OUT_DIR):
    arrays = {"strips": np.concatenate(strips, axis=1), "widths": np.array([s.shape[1] for s in strips], np.int32),
              "labels": np.array(texts), "gaps": np.array(kinds)}
    for name, array in arrays.items():
        path = Path(out_dir) / f"{split}_{name}.npy"
        partial = path.with_suffix(".partial.npy")
        np.save(partial, array)
        partial.replace(path)


def load_split(split, directory=OUT_DIR):
    """-> ([uint8 [28, W] strip, ...], texts, gap kinds)."""
    directory = Path(directory)
    strips = np.load(directory / f"{split}_strips.npy")
    widths = np.load(directory / f"{split}_widths.npy")
    edges = np.concatenate([[0], np.cumsum(widths)])
    return ([strips[:, a:b] for a, b in zip(edges, edges[1:])], list(np.load(directory / f"{split}_labels.npy")),
            list(np.load(directory / f"{split}_gaps.npy")))


def main():
    params = load()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for split, stream in SPLITS.items():
        x, y = load_digits(split)
        strips, texts, kinds = generate(x, y, params["strings"][split], [params["seed"], 4, stream], params)
        save(split, strips, texts, kinds)
        counts = {k: kinds.count(k) for k in sorted(set(kinds))}
        print(f"strings: {split}: {len(strips)} from {split} digits ({', '.join(f'{k} {v}' for k, v in counts.items())})")


if __name__ == "__main__":
    main()
