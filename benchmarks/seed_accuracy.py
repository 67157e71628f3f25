"""Test accuracy of one model recipe over several seeds: the mean is the claim, not the luckiest seed.

    python benchmarks/seed_accuracy.py strong_long --seeds 1 2 3
    python benchmarks/seed_accuracy.py strong --seeds 42 --epochs 3     # a quick look
    python benchmarks/seed_accuracy.py strong --seeds 42 --set augment.elastic=1.5   # a variation
    python benchmarks/seed_accuracy.py robust --seeds 42 --onnx-dir benchmarks/results   # + model.onnx

Trains conf/model/<recipe>.yaml exactly as `train@<variant>` does (same data, drawn uploads and
non-digits included for the recipes that learn from them; best epoch by validation accuracy) once per
seed, and scores that epoch's weights on the test digits (the best of the ten digit classes, as
`evaluate` scores them). Prints one line per seed as it finishes, then the mean and spread, and exits 1
when the mean is under the recipe's target (conf/targets.yaml `seed_accuracy`). With
--onnx-dir it also exports each model (to serve it, or compare it on uploads). Needs
data/prepared (`dvc repro preprocess`), and data/drawn for `reject`/`uploads` recipes.
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from digits.contract import to_input  # noqa: E402
from pipeline.params import model_config  # noqa: E402
from pipeline.preprocess import load_split  # noqa: E402
from pipeline.train import export_onnx, fit, training_data  # noqa: E402
from testkit import targets  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", help="a file name in conf/model/ without .yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="Hydra overrides of the recipe, e.g. augment.elastic=1.5 train.label_smoothing=0.1")
    parser.add_argument("--data", default="data/prepared")
    parser.add_argument("--history-dir", default="benchmarks/results", help="per-seed training curves (CSV)")
    parser.add_argument("--onnx-dir", type=Path, help="also export each seed's model as <recipe>-seed<seed>.onnx")
    args = parser.parse_args()

    variant = model_config(args.recipe, [*args.set, *([f"train.epochs={args.epochs}"] if args.epochs else [])])
    train, val = training_data(variant, args.data)
    x_test, y_test = load_split("test", args.data)
    history_dir = Path(args.history_dir)
    history_dir.mkdir(parents=True, exist_ok=True)
    print(f"{args.recipe} {' '.join(args.set)}: {variant['train']['epochs']} epochs, seeds {args.seeds}, "
          f"{os.cpu_count()} CPUs", flush=True)

    results = []
    for seed in args.seeds:
        started = time.perf_counter()
        model, log = fit(variant, seed, train, val, history_dir / f"{args.recipe}-seed{seed}.csv", name=f"{args.recipe} seed {seed}")
        digits = model.predict(to_input(x_test), batch_size=2000, verbose=0)[:, :10]  # class 10: "not a digit"
        test_accuracy = float((digits.argmax(1) == y_test).mean())
        if args.onnx_dir:
            args.onnx_dir.mkdir(parents=True, exist_ok=True)
            export_onnx(model, args.onnx_dir / f"{args.recipe}-seed{seed}.onnx", to_input(x_test[:256]))
        results.append(test_accuracy)
        print(f"seed {seed}: val {log.best_accuracy:.2%}{' (digits and non-digits)' if variant.get('reject') else ''} "
              f"(epoch {log.best_epoch}), test {test_accuracy:.2%} "
              f"({round((1 - test_accuracy) * len(y_test))} errors), {time.perf_counter() - started:.0f} s", flush=True)

    spread = statistics.stdev(results) if len(results) > 1 else 0.0
    mean, target = statistics.mean(results), targets("seed_accuracy").get(args.recipe)
    verdict = "no target" if target is None else "PASS" if mean >= target else "MISS"
    print(f"{args.recipe}: test accuracy mean {mean:.2%} ± {spread:.2%} over {len(results)} seeds; {verdict}"
          + (f" (target >= {target:.2%}, conf/targets.yaml seed_accuracy)" if target is not None else
             " in conf/targets.yaml seed_accuracy: add one"))
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
