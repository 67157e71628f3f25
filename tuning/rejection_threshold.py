"""The rejection threshold's trade-off on *validation* data, for conf/evaluate/default.yaml's
max_val_rejection: rerun it for each new champion.

    python tuning/rejection_threshold.py           # the registered champion (or MODEL_DIR); conf/tuning.yaml
    python tuning/rejection_threshold.py --n 150   # a quick look

The evaluate stage puts the threshold at a quantile of the champion's calibrated best-digit probability
on MNIST validation digits. Real uploads are harder than MNIST, so more of them fall under it. For each
quantile this prints: validation digits rejected, held-out generated non-digits rejected
(data/drawn/negatives/val.npy), and, for upload-like images of the robustness suite's hardest conditions
drawn from *validation* digits (testkit/uploads.py), the share rejected and the share read right, in all
and per condition. Test digits play no part: they report the final figures (benchmarks/robustness.py).
"""
import argparse

import numpy as np
import yaml

from digits.decode import decode
from digits.normalise import normalise
from serve.model import load_champion
from testkit import ROOT
from testkit.uploads import generate


def upload_like(conditions, n, seed, x, y):
    """n images of each condition drawn from validation digits (x uint8 [N, 28, 28], labels y) and
    normalised by the server's code -> (float32 [M, 28, 28], labels [M], condition names [M])."""
    drawn = [(normalise(decode(data)), label, name)
             for name in conditions for data, label in generate(name, n, seed, x, y)]
    images, labels, names = zip(*drawn)
    return np.array(images, np.float32), np.array(labels), np.array(names)


def best_digit(champion, images):
    """Calibrated probabilities [N, 28, 28] -> (best digit, its probability)."""
    p = champion.calibrated(np.asarray(images, np.float32)[..., None])[:, :10]
    return p.argmax(axis=1), p.max(axis=1)


def main():
    conf = yaml.safe_load((ROOT / "conf" / "tuning.yaml").read_text())["rejection_threshold"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=conf["n"], help="upload-like images per condition")
    parser.add_argument("--seed", type=int, default=conf["seed"])
    parser.add_argument("--quantiles", type=float, nargs="+", default=conf["quantiles"])
    args = parser.parse_args()
    hard = conf["conditions"]

    champion = load_champion()
    val = np.load(ROOT / "data/prepared/val.npz")
    x, y = val["x"], val["y"]
    _, val_conf = best_digit(champion, x / 255.0)
    _, neg_conf = best_digit(champion, np.load(ROOT / "data/drawn/negatives/val.npy") / 255.0)
    up_images, up_label, up_condition = upload_like(hard, args.n, args.seed, x, y)
    up_pred, up_conf = best_digit(champion, up_images)

    print(f"champion {champion.label} (its threshold {champion.rejection_threshold:.3f}); validation data; "
          f"{len(up_label)} upload-like digits ({', '.join(hard)}), seed {args.seed}\n")
    print("| max_val_rejection | threshold | val digits rejected | val non-digits rejected | uploads rejected | "
          "uploads read right | " + " | ".join(hard) + " |")
    print("|---:|---:|---:|---:|---:|---:|" + "---:|" * len(hard))
    for q in args.quantiles:
        t = float(np.quantile(val_conf, q))
        right = (up_pred == up_label) & (up_conf >= t)
        print(f"| {q:g} | {t:.3f} | {(val_conf < t).mean():.2%} | {(neg_conf < t).mean():.2%} | "
              f"{(up_conf < t).mean():.2%} | {right.mean():.2%} | "
              + " | ".join(f"{right[up_condition == name].mean():.2%}" for name in hard) + " |")


if __name__ == "__main__":
    main()
