"""Test accuracy of one model recipe over several seeds: the mean is the claim, not the luckiest seed.

    python benchmarks/seed_accuracy.py strong_long --seeds 1 2 3
    python benchmarks/seed_accuracy.py strong --seeds 42 --epochs 3     # a quick look
    python benchmarks/seed_accuracy.py strong --seeds 42 --set augment.elastic=1.5   # a variation

Trains conf/model/<recipe>.yaml exactly as `train@<variant>` does (same data split, best epoch by
validation accuracy) once per seed, and scores that epoch's weights on the test set. Prints one line
per seed as it finishes, then the mean and spread. Needs data/prepared (`dvc repro preprocess`).
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.params import model_config  # noqa: E402
from pipeline.preprocess import load_split  # noqa: E402
from pipeline.train import fit, to_input  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", help="a file name in conf/model/ without .yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="Hydra overrides of the recipe, e.g. augment.elastic=1.5 train.label_smoothing=0.1")
    parser.add_argument("--data", default="data/prepared")
    parser.add_argument("--history-dir", default="benchmarks/results", help="per-seed training curves (CSV)")
    args = parser.parse_args()

    variant = model_config(args.recipe, [*args.set, *([f"train.epochs={args.epochs}"] if args.epochs else [])])
    train, val = load_split("train", args.data), load_split("val", args.data)
    x_test, y_test = load_split("test", args.data)
    history_dir = Path(args.history_dir)
    history_dir.mkdir(parents=True, exist_ok=True)
    print(f"{args.recipe} {' '.join(args.set)}: {variant['train']['epochs']} epochs, seeds {args.seeds}, "
          f"{os.cpu_count()} CPUs", flush=True)

    results = []
    for seed in args.seeds:
        started = time.perf_counter()
        model, log = fit(variant, seed, train, val, history_dir / f"{args.recipe}-seed{seed}.csv", verbose=0)
        test_accuracy = float((model.predict(to_input(x_test), batch_size=2000, verbose=0).argmax(1) == y_test).mean())
        results.append(test_accuracy)
        print(f"seed {seed}: val {log.best_accuracy:.2%} (epoch {log.best_epoch}), test {test_accuracy:.2%} "
              f"({round((1 - test_accuracy) * len(y_test))} errors), {time.perf_counter() - started:.0f} s", flush=True)

    spread = statistics.stdev(results) if len(results) > 1 else 0.0
    print(f"{args.recipe}: test accuracy mean {statistics.mean(results):.2%} ± {spread:.2%} over {len(results)} seeds")


if __name__ == "__main__":
    main()
