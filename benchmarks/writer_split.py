"""Does validation see new writers? MNIST's 60,000 training digits are stored in writer order; a random
hold-out shares its writers with training, a contiguous block mostly does not.

    python benchmarks/writer_split.py                          # style correlations + fast recipe, seed 1
    python benchmarks/writer_split.py --recipe strong --epochs 4 --seeds 1 2
    python benchmarks/writer_split.py --recipe strong --epochs 4 --set augment.stroke=1 --uploads 20000

Training digits only (data/raw/mnist.npz's x_train); the test split plays no part. Two measurements:

1. Style along the file: for each digit, its stroke width, slant, ink mass and share of grey pixels,
   less its class's mean, and the correlation between digits `lag` places apart. Shuffled digits would
   give ~0 at every lag; digits stored writer by writer correlate over hundreds of places.
2. The same recipe trained on 50,000 training digits and scored on the other 10,000, held out three ways:
   at random (as pipeline/preprocess.py does now), the first 10,000, the last 10,000. If the blocks'
   error is higher than the random hold-out's, a random validation split overstates accuracy on people
   the model has not seen (which is what the test split and every real upload are). Each hold-out is
   also scored drawn as thick-pen uploads (benchmarks/robustness.py's marker, decoded and normalised by
   serve/images.py), the row where validation and test part most. With --uploads N the model also
   trains on N of its training digits drawn as uploads (pipeline/uploads.py), as `robust` does.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HOLD_OUT = 10_000
LAGS = (1, 2, 10, 100, 500, 2000)


def style(x_uint8):
    """uint8 [N, 28, 28] -> {feature: float [N]}: what differs between writers more than between digits."""
    x = x_uint8.astype(np.float32) / 255
    mass = x.sum(axis=(1, 2))
    ink = x > 0.5
    inner = ink[:, 1:-1, 1:-1] & ink[:, :-2, 1:-1] & ink[:, 2:, 1:-1] & ink[:, 1:-1, :-2] & ink[:, 1:-1, 2:]
    area = ink.sum(axis=(1, 2))
    width = 2 * area / np.maximum(area - inner.sum(axis=(1, 2)), 1)
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float32)
    cy = (x * yy).sum(axis=(1, 2)) / mass
    cx = (x * xx).sum(axis=(1, 2)) / mass
    dy, dx = yy - cy[:, None, None], xx - cx[:, None, None]
    slant = (x * dy * dx).sum(axis=(1, 2)) / (x * dy * dy).sum(axis=(1, 2))
    grey = ((x > 0.05) & (x < 0.95)).sum(axis=(1, 2)) / np.maximum((x > 0.05).sum(axis=(1, 2)), 1)
    return {"stroke width": width, "slant": slant, "ink mass": mass, "grey share": grey}


def lag_correlations(values, labels, lags=LAGS):
    """Correlation of a feature (less its class mean) between digits `lag` places apart in the file."""
    r = values.astype(np.float64).copy()
    for c in np.unique(labels):
        r[labels == c] -= r[labels == c].mean()
    r = (r - r.mean()) / r.std()
    return [float(np.mean(r[:-lag] * r[lag:])) for lag in lags]


def hold_outs(n, seed):
    """{name: held-out indices} of the n training digits."""
    return {"random (as now)": np.random.default_rng(seed).permutation(n)[:HOLD_OUT],
            "first 10,000": np.arange(HOLD_OUT), "last 10,000": np.arange(n - HOLD_OUT, n)}


def drawn_as_thick_pen(job):
    """(digit, seed) -> the uint8 28x28 the server makes of it drawn with benchmarks/robustness.py's marker."""
    from benchmarks.robustness import make_thick_pen
    from serve.images import decode, normalise

    digit, seed = job
    return (normalise(decode(make_thick_pen(digit, np.random.default_rng(seed)))) * 255).round().astype(np.uint8)


def thick_pens(x, seed):
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor() as pool:
        return np.stack(list(pool.map(drawn_as_thick_pen, [(d, [seed, i]) for i, d in enumerate(x)], chunksize=256)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="fast", help="a file name in conf/model/ (a 10-class one)")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="Hydra overrides of the recipe")
    parser.add_argument("--uploads", type=int, default=0, help="also train on this many training digits drawn as uploads")
    parser.add_argument("--no-training", action="store_true", help="only the style correlations")
    args = parser.parse_args()

    with np.load(ROOT / "data/raw/mnist.npz") as raw:
        x, y = raw["x_train"], raw["y_train"]
    print(f"1. style of digits `lag` places apart in MNIST's training file, {len(x)} digits (0 = unrelated)\n")
    print("| feature | " + " | ".join(f"lag {lag}" for lag in LAGS) + " |")
    print("|---|" + "---:|" * len(LAGS))
    for name, values in style(x).items():
        print(f"| {name} | " + " | ".join(f"{c:+.2f}" for c in lag_correlations(values, y)) + " |")
    if args.no_training:
        return

    from pipeline.params import model_config
    from pipeline.train import fit, to_input
    from pipeline.uploads import generate as draw_uploads

    variant = model_config(args.recipe, [*args.set, *([f"train.epochs={args.epochs}"] if args.epochs else [])])
    if variant.get("reject") or variant.get("uploads"):
        parser.error(f"{args.recipe} reads data/drawn; use a 10-class MNIST recipe (fast, cnn, strong) and --uploads")
    print(f"\n2. {args.recipe} {' '.join(args.set)} ({variant['train']['epochs']} epochs) trained on "
          f"{len(x) - HOLD_OUT} training digits{f' and {args.uploads} of them drawn as uploads' if args.uploads else ''}, "
          f"scored on the other {HOLD_OUT}, plain and drawn with a thick pen; errors per seed {args.seeds}\n")
    print("| held out | plain, per seed | thick pen, per seed | plain error | thick-pen error | s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, held in hold_outs(len(x), seed=42).items():
        started = time.perf_counter()
        keep = np.ones(len(x), bool)
        keep[held] = False
        train = x[keep], y[keep]
        if args.uploads:
            drawn = draw_uploads(*train, args.uploads, [42, 3])
            train = np.concatenate([train[0], drawn[0]]), np.concatenate([train[1], drawn[1]])
        pens = thick_pens(x[held], seed=7)
        plain_errors, pen_errors = [], []
        for seed in args.seeds:
            # Best epoch chosen on the hold-out itself, as train@ chooses on validation: the same for all three.
            model, _ = fit(variant, seed, train, (x[held], y[held]), Path(os.devnull), verbose=0)
            for images, errors in ((x[held], plain_errors), (pens, pen_errors)):
                predicted = model.predict(to_input(images), batch_size=2000, verbose=0).argmax(axis=1)
                errors.append(int((predicted != y[held]).sum()))
        print(f"| {name} | {' / '.join(map(str, plain_errors))} | {' / '.join(map(str, pen_errors))} "
              f"| {np.mean(plain_errors) / HOLD_OUT:.2%} | {np.mean(pen_errors) / HOLD_OUT:.2%} "
              f"| {time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
