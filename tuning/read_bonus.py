"""Choose conf/image.toml's segment.digit_bonus on *validation* digits: how often /read gets a number
exactly right, for each bonus, with the registered champion (or MODEL_DIR). Rerun it for each new champion.

    python tuning/read_bonus.py                     # conf/tuning.yaml: 300 numbers of each kind, seed 1
    python tuning/read_bonus.py --n 100 --bonus 0 1 2
    python tuning/read_bonus.py --n 1000 --bonus 1 --threshold-scale 1 0.5 0   # softer rejection

The bonus is the log-probability a reading gains per digit: 0 lets the model glue pieces whenever the
glued blob looks at least as much like one digit as the pieces look like two; large values keep
geometry's pieces apart (never joined). Numbers are drawn like the robustness suite's (testkit/uploads.py),
from the validation split, so the test digits that report the final figure play no part in the choice.
--threshold-scale reads each number again with the champion's rejection threshold times each scale
(1: as /read answers; 0: a digit inside a number is never refused), and adds numbers read wrong and
refused beside the exact ones.
"""
import argparse
import time

import numpy as np
import yaml

from digits.decode import decode
from digits.segment import read
from serve.model import load_champion
from testkit import ROOT
from testkit.uploads import NUMBERS, generate


def number(gray, champion, bonus, threshold_scale=1.0):
    """The number /read would answer, or None (no ink, or a digit under the rejection threshold)."""
    found = read(gray, champion.calibrated, bonus)
    if not found:
        return None
    digits = np.stack([p for _, _, p in found])[:, :10]
    if (digits.max(axis=1) < champion.rejection_threshold * threshold_scale).any():
        return None
    return "".join(str(int(d)) for d in digits.argmax(axis=1))


def main():
    conf = yaml.safe_load((ROOT / "conf" / "tuning.yaml").read_text())["read_bonus"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=conf["n"], help="numbers of each kind")
    parser.add_argument("--seed", type=int, default=conf["seed"])
    parser.add_argument("--bonus", type=float, nargs="+", default=conf["bonus"])
    parser.add_argument("--threshold-scale", type=float, nargs="+", default=conf["threshold_scale"])
    args = parser.parse_args()

    champion = load_champion()
    val = np.load(ROOT / "data/prepared/val.npz")
    samples = {name: [(decode(data), label) for data, label in generate(name, args.n, args.seed, val["x"], val["y"])]
               for name in NUMBERS}
    print(f"champion {champion.label}, validation digits, {args.n} numbers of each kind, seed {args.seed}\n")
    print("| bonus | threshold | " + " | ".join(f"{name} exact / wrong / refused" for name in samples) + " | mean ms |")
    print("|---:|---:|" + "---:|" * (len(samples) + 1))
    for bonus in args.bonus:
        for scale in args.threshold_scale:
            started, cells = time.perf_counter(), []
            for name, pages in samples.items():
                answers = [(number(gray, champion, bonus, scale), label) for gray, label in pages]
                exact, refused = np.mean([a == label for a, label in answers]), np.mean([a is None for a, _ in answers])
                cells.append(f"{exact:.1%} / {1 - exact - refused:.1%} / {refused:.1%}")
            ms = (time.perf_counter() - started) * 1000 / sum(len(p) for p in samples.values())
            print(f"| {bonus:g} | {champion.rejection_threshold * scale:.3f} | " + " | ".join(cells) + f" | {ms:.1f} |")


if __name__ == "__main__":
    main()
