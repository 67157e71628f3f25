"""Choose conf/image.toml's [read] (the number reader alone, or the segmenter where it is surer) on
*validation* digits: written numbers drawn like the robustness suite's (testkit/uploads.py), read by
/read's own code with the registered champion and number reader. Rerun it for each new reader.

    python tuning/read_choice.py                  # 300 numbers of each kind, seed 1
    python tuning/read_choice.py --n 100 --margin 0 0.1 0.3

Prints, for each kind of number (apart, touching, overlapping, 7-8 digits, a single digit, non-digit
pages), how often the answer is right (for non-digit pages: refused) when the reader answers alone and
when the segmenter's reading wins where it is surer by more than each margin.
"""
import argparse

import numpy as np

from digits.decode import decode
from pipeline.preprocess import load_split
from serve import reading
from serve.model import load_champion, load_reader
from testkit.uploads import NON_DIGITS, NUMBERS, generate

KINDS = [*NUMBERS, "read_single_digit"]


def pages(n, seed, x, y):
    out = {name: generate(name, n, seed, x, y) for name in KINDS}
    per_kind = max(1, n // len(NON_DIGITS))
    out["read_non_digits"] = [(data, None) for name in NON_DIGITS for data, _ in generate(name, per_kind, seed, x, y)]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--margin", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.4])
    args = parser.parse_args()
    champion = load_champion()
    reader, why, _ = load_reader()
    if reader is None:
        raise SystemExit(f"read_choice: no number reader: {why}")
    x, y = load_split("val")
    rules = [("reader", "reader", 0.0)] + [(f"surer +{m}", "surer", m) for m in args.margin]
    print(f"{reader.label} and {champion.label}, validation digits, {args.n} numbers a kind, seed {args.seed}")
    print("| kind | " + " | ".join(name for name, _, _ in rules) + " |")
    print("|---|" + "---:|" * len(rules))
    for kind, samples in pages(args.n, args.seed, x, y).items():
        right = np.zeros(len(rules))
        for data, label in samples:
            gray = decode(data)
            for k, (_, combine, margin) in enumerate(rules):
                answer = reading.number(gray, champion, reader, combine=combine, margin=margin)["number"]
                right[k] += answer is None if label is None else answer == str(label)
        print(f"| {kind} | " + " | ".join(f"{r / len(samples):.2%}" for r in right) + " |", flush=True)


if __name__ == "__main__":
    main()
