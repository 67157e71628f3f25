"""Would the real-upload model read uploads better if it trained on more digits drawn as uploads?

    python benchmarks/upload_count.py --recipe robust --uploads 20000 60000            # 60 min on 2 cores
    python benchmarks/upload_count.py --models models/robust_long/model.onnx --uploads  # score files only

For each count N, trains the recipe (one with `reject: true` and `uploads: true`, conf/model/) once, from
--seed, on the pipeline's own data: MNIST's training split, the non-digits of data/drawn/negatives and N
training digits drawn as uploads. The first 20,000 are the `uploads` stage's own (data/drawn/uploads);
beyond them pipeline/uploads.py draws more from another seed, so a training digit can be drawn twice,
differently. Every model, and each ONNX file given with --models, is scored on validation data only:
MNIST validation errors, the upload-like validation digits of benchmarks/rejection_threshold.py (its
six hardest conditions) misread, rejected and read right, thick and thin pens, held-out non-digits
rejected. Temperature 1 for every model and a threshold at the --quantile of its own validation digits'
best-digit probability (the evaluate stage's rule), so models compare with each other, not with the
served champion's calibrated figures. Test digits play no part.
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

from benchmarks.rejection_threshold import HARD, upload_like  # noqa: E402


def measure(probabilities, val_y, upload_y, upload_condition, quantile):
    """{metric: count or share} from a model's probabilities on (validation digits, non-digits, upload-like
    digits), at the threshold that rejects `quantile` of the validation digits."""
    digits, others, uploads = (p[:, :10] for p in probabilities)
    threshold = float(np.quantile(digits.max(axis=1), quantile))
    misread = uploads.argmax(axis=1) != upload_y
    under = uploads.max(axis=1) < threshold
    right = ~misread & ~under
    return {"MNIST val errors": int((digits.argmax(axis=1) != val_y).sum()), "uploads misread": int(misread.sum()),
            "uploads rejected": int(under.sum()), "uploads read right": right.mean(),
            "thick_pen": right[upload_condition == "thick_pen"].mean(),
            "thin_pen": right[upload_condition == "thin_pen"].mean(),
            "non-digits rejected": (others.max(axis=1) < threshold).mean()}


def score(probabilities, val_y, upload_y, upload_condition, quantile):
    """measure()'s row with the shares as percentages."""
    row = measure(probabilities, val_y, upload_y, upload_condition, quantile)
    return {k: v if isinstance(v, int) else f"{v:.2%}" for k, v in row.items()}


def drawn_uploads(n, seed):
    """(images, labels): n training digits drawn as uploads, the uploads stage's own first."""
    from pipeline.preprocess import load_split
    from pipeline.uploads import generate, load_train

    images, labels = load_train()
    if n <= len(images):
        return images[:n], labels[:n]
    x, y = load_split("train")
    parts, drawn, round_ = [(images, labels)], len(images), 0
    while drawn < n:  # a round draws each training digit at most once, and leaves out blank results
        round_ += 1
        parts.append(generate(x, y, n - drawn, [seed, 4, round_]))
        drawn += len(parts[-1][0])
    return tuple(np.concatenate(column)[:n] for column in zip(*parts))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="robust", help="a file name in conf/model/ that reads data/drawn")
    parser.add_argument("--uploads", type=int, nargs="*", default=[20000, 60000], help="counts to train with")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="Hydra overrides of the recipe")
    parser.add_argument("--models", nargs="*", type=Path, default=[], help="ONNX files to score beside them")
    parser.add_argument("--n", type=int, default=2000, help="upload-like validation digits per condition")
    parser.add_argument("--quantile", type=float, default=0.001, help="conf/evaluate's max_val_rejection")
    args = parser.parse_args()
    os.chdir(ROOT)  # the pipeline's loaders read data/ relative to the repository

    from pipeline import negatives
    from pipeline.preprocess import load_split

    val_x, val_y = load_split("val")
    others = negatives.load_split("val")
    up_x, up_y, up_condition = upload_like(args.n, 1, val_x, val_y)
    inputs = [val_x / 255.0, others / 255.0, up_x]
    print(f"validation: {len(val_y)} MNIST digits, {len(others)} non-digits, {len(up_y)} upload-like digits "
          f"({', '.join(HARD)}; seed 1); threshold at the {args.quantile:g} quantile of each model's validation digits\n")
    rows = {}

    for path in args.models:
        from serve.model import onnx_session

        session = onnx_session(path.read_bytes())
        name = session.get_inputs()[0].name
        probabilities = [session.run(None, {name: np.asarray(x, np.float32)[..., None]})[0] for x in inputs]
        rows[str(path)] = score(probabilities, val_y, up_y, up_condition, args.quantile)

    if args.uploads:
        from pipeline.params import model_config
        from pipeline.train import fit, to_input, with_negatives

        variant = model_config(args.recipe, args.set)
        if not (variant.get("reject") and variant.get("uploads")):
            parser.error(f"{args.recipe} does not learn from non-digits and uploads (reject, uploads)")
        train_digits, val = load_split("train"), with_negatives("val", (val_x, val_y))
    for n in args.uploads:
        started = time.perf_counter()
        drawn = drawn_uploads(n, args.seed)
        train = with_negatives("train", (np.concatenate([train_digits[0], drawn[0]]),
                                         np.concatenate([train_digits[1], drawn[1].astype(train_digits[1].dtype)])))
        model, log = fit(variant, args.seed, train, val, Path(os.devnull), verbose=0)
        probabilities = [model.predict(to_input(np.asarray(x) * 255), batch_size=2000, verbose=0) for x in inputs]
        name = f"{' '.join([args.recipe, *args.set])} ({variant['train']['epochs']} epochs), {n} uploads, seed {args.seed}"
        rows[name] = score(probabilities, val_y, up_y, up_condition, args.quantile) | {
            "best epoch": log.best_epoch, "minutes": f"{(time.perf_counter() - started) / 60:.0f}"}
        print(f"{name}: {rows[name]}", flush=True)

    keys = list(dict.fromkeys(k for row in rows.values() for k in row))
    print("\n| model | " + " | ".join(keys) + " |\n|---|" + "---:|" * len(keys))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(str(row.get(k, "")) for k in keys) + " |")


if __name__ == "__main__":
    main()
