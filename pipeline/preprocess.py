"""Stage `preprocess`: raw MNIST arrays -> train / validation / test splits (uint8, 28x28).

Validation is held out from the 60,000 training digits with the global seed; it drives every choice
(best epoch, best variant, calibration). The test split is only ever used for reporting.
"""
from pathlib import Path

import numpy as np

from pipeline.params import load

RAW = Path("data/raw/mnist.npz")
OUT_DIR = Path("data/prepared")


def split(x_train, y_train, x_test, y_test, validation_size, seed, train_limit=None, test_limit=None):
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_train))
    val_idx, train_idx = order[:validation_size], order[validation_size:]
    if train_limit:
        train_idx = train_idx[:train_limit]
    test_idx = np.arange(len(x_test))[:test_limit] if test_limit else np.arange(len(x_test))
    return {
        "train": (x_train[train_idx], y_train[train_idx]),
        "val": (x_train[val_idx], y_train[val_idx]),
        "test": (x_test[test_idx], y_test[test_idx]),
    }


def load_split(name, directory=OUT_DIR):
    with np.load(Path(directory) / f"{name}.npz") as f:
        return f["x"], f["y"]


def main():
    params = load()
    with np.load(RAW) as raw:
        splits = split(raw["x_train"], raw["y_train"], raw["x_test"], raw["y_test"], seed=params["seed"],
                       **params["data"])
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, (x, y) in splits.items():
        partial = OUT_DIR / f"{name}.partial.npz"
        np.savez_compressed(partial, x=x, y=y)
        partial.replace(OUT_DIR / f"{name}.npz")
        print(f"preprocess: {name}: {len(y)} digits")


if __name__ == "__main__":
    main()
