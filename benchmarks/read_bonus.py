"""Choose serve/segment.py's DIGIT_BONUS on *validation* digits: how often /read gets a number exactly
right, for each bonus, with the registered champion.

    python benchmarks/read_bonus.py                  # 300 numbers of each kind, seed 1
    python benchmarks/read_bonus.py --n 100 --bonus 0 1 2

The bonus is the log-probability a reading gains per digit: 0 lets the model glue pieces whenever the
glued blob looks at least as much like one digit as the pieces look like two; large values keep
geometry's pieces apart (never joined). Numbers are drawn like benchmarks/robustness.py's, from the
validation split, so the test digits that report the final figure play no part in the choice.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import robustness as rb  # noqa: E402
from serve.images import decode  # noqa: E402
from serve.model import load_champion  # noqa: E402
from serve.segment import read  # noqa: E402


def number(gray, champion, bonus):
    """The number /read would answer, or None (no ink, or a digit under the rejection threshold)."""
    found = read(gray, champion.calibrated, bonus)
    if not found:
        return None
    digits = np.stack([p for _, _, p in found])[:, :10]
    if (digits.max(axis=1) < champion.rejection_threshold).any():
        return None
    return "".join(str(int(d)) for d in digits.argmax(axis=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="numbers of each kind")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bonus", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 4.0, 100.0])
    args = parser.parse_args()

    champion = load_champion()
    val = np.load(ROOT / "data/prepared/val.npz")
    samples = {name: [(decode(data), label) for data, label in rb.generate(name, args.n, args.seed, val["x"], val["y"])]
               for name in rb.NUMBERS}
    print(f"champion {champion.label}, validation digits, {args.n} numbers of each kind, seed {args.seed}\n")
    print("| bonus | " + " | ".join(f"{name} exact" for name in samples) + " | mean ms |")
    print("|---:|" + "---:|" * (len(samples) + 1))
    for bonus in args.bonus:
        started, cells = time.perf_counter(), []
        for name, pages in samples.items():
            cells.append(np.mean([number(gray, champion, bonus) == label for gray, label in pages]))
        ms = (time.perf_counter() - started) * 1000 / sum(len(p) for p in samples.values())
        print(f"| {bonus:g} | " + " | ".join(f"{c:.1%}" for c in cells) + f" | {ms:.1f} |")


if __name__ == "__main__":
    main()
