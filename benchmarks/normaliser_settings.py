"""Would other settings of the normaliser (serve/images.py) read upload-like *validation* digits better
with the champion as it is, or averaging it over several normalisations of one upload?

    python benchmarks/normaliser_settings.py          # 2,000 per condition, seed 1, ~8 min on 2 cores

Each upload is decoded once, then normalised with each setting: the ink cutoff (INK_CUTOFF), the
speck share (SPECK_SHARE), and the stroke band (STROKE_BAND: MNIST's 10th-90th percentiles, a band
round the median, or none: pens left at their own width). The last rows average the champion's
probabilities over the served 28x28 and another setting's (test-time augmentation over stroke widths).
For each: upload-like digits misread, rejected and read right at the champion's own threshold, how many
the setting reads right that the served one does not (fixed) and the other way round (broke), and each
condition (benchmarks/rejection_threshold.py's six hardest). Test digits play no part. The model was
trained on uploads normalised the served way (pipeline/uploads.py), so a setting that wins here would
also need the model retrained on it.
"""
import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import robustness as rb  # noqa: E402
from benchmarks.rejection_threshold import HARD  # noqa: E402
from serve import images  # noqa: E402
from serve.model import load_champion  # noqa: E402

SETTINGS = {
    "served": {},
    "ink cutoff 0.15": {"INK_CUTOFF": 0.15},
    "ink cutoff 0.25": {"INK_CUTOFF": 0.25},
    "speck share 0.01": {"SPECK_SHARE": 0.01},
    "stroke band 7.0-9.5 (round the median)": {"STROKE_BAND": (7.0, 9.5)},
    "no stroke band (pens as drawn)": {"STROKE_BAND": (0.0, np.inf)},
}
AVERAGED = ["stroke band 7.0-9.5 (round the median)", "no stroke band (pens as drawn)"]


@contextmanager
def settings(**values):
    """serve.images' module settings changed for the duration."""
    before = {name: getattr(images, name) for name in values}
    for name, value in values.items():
        setattr(images, name, value)
    try:
        yield
    finally:
        for name, value in before.items():
            setattr(images, name, value)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="upload-like images per condition")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    champion = load_champion()
    val = np.load(ROOT / "data/prepared/val.npz")
    pages, labels, conditions = [], [], []
    for name in HARD:
        for data, label in rb.generate(name, args.n, args.seed, val["x"], val["y"]):
            pages.append(images.decode(data))
            labels.append(label)
            conditions.append(name)
    labels, conditions = np.array(labels), np.array(conditions)

    probabilities = {}
    for name, values in SETTINGS.items():
        with settings(**values):
            probabilities[name] = champion.calibrated(np.stack([images.normalise(p) for p in pages])[..., None])
    for name in AVERAGED:
        probabilities[f"served and {name}, averaged"] = (probabilities["served"] + probabilities[name]) / 2

    print(f"champion {champion.label} (threshold {champion.rejection_threshold:.3f}); validation data; "
          f"{len(labels)} upload-like digits, seed {args.seed}\n")
    print("| setting | misread | rejected | read right | fixed | broke | " + " | ".join(HARD) + " |")
    print("|---|---:|---:|---:|---:|---:|" + "---:|" * len(HARD))
    served = None
    for name, p in probabilities.items():
        digits = p[:, :10]
        misread = digits.argmax(axis=1) != labels
        rejected = digits.max(axis=1) < champion.rejection_threshold
        right = ~misread & ~rejected
        served = right if served is None else served
        print(f"| {name} | {misread.sum()} | {rejected.sum()} | {right.mean():.2%} | {(right & ~served).sum()} | "
              f"{(served & ~right).sum()} | " + " | ".join(f"{right[conditions == c].mean():.2%}" for c in HARD) + " |",
              flush=True)


if __name__ == "__main__":
    main()
