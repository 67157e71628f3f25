"""Would averaging the champion over one-pixel shifts of each 28x28 (test-time augmentation) read
upload-like *validation* digits better?

    python benchmarks/shift_average.py          # the registered champion, 2,000 per condition, seed 1

For no shift, the four one-pixel shifts, and all nine shifts within a pixel, this prints: MNIST
validation errors, upload-like validation digits misread (benchmarks/rejection_threshold.py's
conditions and images) and read right at a threshold put where the evaluate stage puts it (the
max_val_rejection quantile of validation digits, params.yaml), thick and thin pens, and held-out non-digits rejected. Shifts cost one
model call each. Test digits play no part.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.rejection_threshold import HARD, upload_like  # noqa: E402
from pipeline.params import load  # noqa: E402
from serve.model import load_champion  # noqa: E402

SHIFTS = {
    "none": [(0, 0)],
    "4 shifts + none": [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)],
    "all 9": [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)],
}


def shifted(images, dy, dx):
    """[N, 28, 28] moved dy down and dx right (each -1, 0 or 1); what comes in at the edge is background.
    (Not np.roll: the normaliser places the box by centre of mass, so ink can touch the edge.)"""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    return padded[:, 1 - dy:29 - dy, 1 - dx:29 - dx]


def shifted_mean(champion, images, shifts):
    """Calibrated probabilities averaged over the shifted images."""
    images = np.asarray(images, np.float32)
    return sum(champion.calibrated(shifted(images, dy, dx)[..., None]) for dy, dx in shifts) / len(shifts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="upload-like images per condition")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    champion = load_champion()
    max_val_rejection = load(ROOT / "params.yaml")["evaluate"]["max_val_rejection"]
    val = np.load(ROOT / "data/prepared/val.npz")
    x, y = val["x"] / 255.0, val["y"]
    negatives = np.load(ROOT / "data/drawn/negatives/val.npy") / 255.0
    up_x, up_y, up_condition = upload_like(args.n, args.seed, val["x"], y)

    print(f"champion {champion.label}; validation data; {len(up_y)} upload-like digits ({', '.join(HARD)}), seed {args.seed}\n")
    print("| shifts | model calls | MNIST val errors | uploads misread | uploads read right | thick_pen | thin_pen | non-digits rejected | threshold |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, shifts in SHIFTS.items():
        p_val, p_up, p_neg = (shifted_mean(champion, images, shifts)[:, :10] for images in (x, up_x, negatives))
        threshold = float(np.quantile(p_val.max(axis=1), max_val_rejection))
        misread = p_up.argmax(axis=1) != up_y
        right = ~misread & (p_up.max(axis=1) >= threshold)
        print(f"| {name} | {len(shifts)} | {(p_val.argmax(axis=1) != y).sum()} | {misread.sum()} | {right.mean():.2%} | "
              f"{right[up_condition == 'thick_pen'].mean():.2%} | {right[up_condition == 'thin_pen'].mean():.2%} | "
              f"{(p_neg.max(axis=1) < threshold).mean():.2%} | {threshold:.3f} |")


if __name__ == "__main__":
    main()
