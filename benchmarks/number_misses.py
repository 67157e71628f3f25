"""Why written numbers fail: each number benchmarks/robustness.py draws, read through /read's path, with
every failure put down to its first cause.

    python benchmarks/number_misses.py --split val --seed 1 2 3     # for choices
    python benchmarks/number_misses.py --split test --seed 0 7 11   # the robustness table's numbers, explained

Causes, in this order: the wrong count of digits; a digit misread that the model also misreads as its
plain MNIST 28x28 (the model's own error, which no drawing, segmenting or normalising can undo); a digit
misread only once drawn in the number; a digit read right but under the rejection threshold. The
"plain-misread" share is a ceiling for this model: even a perfect segmenter and normaliser would read
those numbers wrong.
"""
import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import robustness as rb  # noqa: E402
from serve.images import decode  # noqa: E402
from serve.model import load_champion  # noqa: E402
from serve.segment import read  # noqa: E402

CAUSES = ["exact", "wrong count", "a digit misread plain too", "a digit misread only in the number", "a digit under the threshold"]


def cause(found, picks, labels, plain_right, threshold):
    """The first reason a number was read wrong, or "exact"."""
    if len(found) != len(picks):
        return "wrong count"
    probabilities = np.stack([p[:10] for _, _, p in found])
    wrong = probabilities.argmax(axis=1) != labels[picks]
    if (wrong & ~plain_right[picks]).any():
        return "a digit misread plain too"
    if wrong.any():
        return "a digit misread only in the number"
    if (probabilities.max(axis=1) < threshold).any():
        return "a digit under the threshold"
    return "exact"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=["val", "test"], default="val")
    parser.add_argument("--seed", type=int, nargs="+", default=[1])
    parser.add_argument("--n", type=int, default=1000, help="numbers per seed")
    args = parser.parse_args()

    champion = load_champion()
    data = np.load(ROOT / f"data/prepared/{args.split}.npz")
    x, y = data["x"], data["y"]
    plain_right = champion.calibrated((x / 255.0).astype(np.float32)[..., None])[:, :10].argmax(axis=1) == y
    print(f"champion {champion.label} (threshold {champion.rejection_threshold:.3f}); {args.split} digits "
          f"({(~plain_right).sum()} of {len(y)} misread as plain MNIST); {args.n} numbers per seed\n")
    print("| seed | digits | plain-misread digits drawn | " + " | ".join(CAUSES) + " |")
    print("|---:|---:|---:|" + "---:|" * len(CAUSES))
    for seed in args.seed:
        counts, digits, plain_misread = Counter(), 0, 0
        for picks, page in rb.numbers("number", args.n, seed, x):
            found = read(decode(page), champion.calibrated)
            counts[cause(found, picks, y, plain_right, champion.rejection_threshold)] += 1
            digits += len(picks)
            plain_misread += int((~plain_right[picks]).sum())
        print(f"| {seed} | {digits} | {plain_misread} | " + " | ".join(f"{counts[c] / args.n:.1%}" for c in CAUSES) + " |",
              flush=True)


if __name__ == "__main__":
    main()
