"""The rejection threshold's trade-off on *validation* data (conf/evaluate/default.yaml: max_val_rejection).

    python benchmarks/rejection_threshold.py          # the registered champion, 150 uploads per condition

The evaluate stage puts the threshold at a quantile of the champion's calibrated best-digit probability
on MNIST validation digits. Real uploads are harder than MNIST, so more of them fall under it. For each
quantile this prints: validation digits rejected, held-out generated non-digits rejected
(data/drawn/negatives/val.npy), and, for upload-like images drawn by benchmarks/robustness.py from
*validation* digits (its hardest conditions), the share rejected and the share read right, in all and
per condition. Test digits play no part: they report the final figures (benchmarks/robustness.py).
"""
import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import robustness as rb  # noqa: E402
from serve.images import decode, normalise  # noqa: E402
from serve.model import load_champion  # noqa: E402

HARD = ["thick_pen", "thin_pen", "phone_photo", "rgba_canvas", "bmp", "paper_jpeg"]


def upload_like(n, seed, x, y):
    """n images of each HARD condition drawn from validation digits (x uint8 [N, 28, 28], labels y) and
    normalised by the server's code -> (float32 [M, 28, 28], labels [M], condition names [M])."""
    drawn = [(normalise(decode(data)), label, name) for name in HARD for data, label in rb.generate(name, n, seed, x, y)]
    images, labels, conditions = zip(*drawn)
    return np.array(images, np.float32), np.array(labels), np.array(conditions)


def best_digit(champion, images):
    """Calibrated probabilities [N, 28, 28] -> (best digit, its probability)."""
    p = champion.calibrated(np.asarray(images, np.float32)[..., None])[:, :10]
    return p.argmax(axis=1), p.max(axis=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=150, help="upload-like images per condition")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--quantiles", type=float, nargs="+", default=[0.005, 0.003, 0.002, 0.001, 0.0005])
    args = parser.parse_args()

    champion = load_champion()
    val = np.load(ROOT / "data/prepared/val.npz")
    x, y = val["x"], val["y"]
    _, val_conf = best_digit(champion, x / 255.0)
    _, neg_conf = best_digit(champion, np.load(ROOT / "data/drawn/negatives/val.npy") / 255.0)
    up_images, up_label, up_condition = upload_like(args.n, args.seed, x, y)
    up_pred, up_conf = best_digit(champion, up_images)

    print(f"champion {champion.label} (its threshold {champion.rejection_threshold:.3f}); validation data; "
          f"{len(up_label)} upload-like digits ({', '.join(HARD)}), seed {args.seed}\n")
    print("| max_val_rejection | threshold | val digits rejected | val non-digits rejected | uploads rejected | uploads read right | "
          + " | ".join(HARD) + " |")
    print("|---:|---:|---:|---:|---:|---:|" + "---:|" * len(HARD))
    for q in args.quantiles:
        t = float(np.quantile(val_conf, q))
        right = (up_pred == up_label) & (up_conf >= t)
        print(f"| {q:g} | {t:.3f} | {(val_conf < t).mean():.2%} | {(neg_conf < t).mean():.2%} | "
              f"{(up_conf < t).mean():.2%} | {right.mean():.2%} | "
              + " | ".join(f"{right[up_condition == name].mean():.2%}" for name in HARD) + " |")


if __name__ == "__main__":
    main()
