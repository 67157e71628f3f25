"""Stage `uploads`: training digits drawn the ways people upload them, as the server's normaliser sees them.

    python -m pipeline.uploads

MNIST's own 28x28s are tidy. What the server hands the model after digits/ has made a 28x28 out
of a marker on grey paper, a fine liner, a phone photo under a lamp or a JPEG is not: loops a fat
pen filled in and the normaliser thinned back, faint grey strokes, blur, a tilted page. The variants
with `uploads: true` also train on these. Each is a *training* digit (never a validation or test one)
drawn once as a random upload, encoded as a PNG or JPEG, then decoded and normalised by the server's
own code: the model learns what the server will actually show it.

The mix of pens, papers, lighting and encodings (conf/uploads/default.yaml, in params.yaml) covers the
kinds of upload issue #4 names. It is drawn here with its own code and wider ranges, independently of
the robustness suite (testkit/uploads.py), which measures on test digits. Writes
data/drawn/uploads/train.npy (uint8 [N, 28, 28], white on black) and train_labels.npy.
Plain .npy as in pipeline/negatives.py: unchanged outputs give identical files, and DVC retrains nothing.
"""
import io
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

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
    gray, _ = page(ink112, rng, cfg)
    if rng.random() < cfg["photo"]["share"]:
        gray = photograph(gray, rng, cfg)
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
