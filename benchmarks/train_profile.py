"""Where a training epoch's time goes, against this CPU's limit, all measured in one run.

    python benchmarks/train_profile.py                     # the default champion recipe (params.yaml)
    python benchmarks/train_profile.py --variant robust_long --batches 40

1. The CPU's peak: a large float32 matmul (and bfloat16, for reference), in GFLOP/s.
2. The input pipeline alone: batches of the variant's real training data (pen-width versions drawn once,
   the warp per batch) iterated without a model, ms a batch.
3. Forward + backward alone: the variant's network fitted on one batch held in memory, ms a batch, and
   the FLOP/s that is (multiply-adds counted layer by layer, x2 for FLOPs, x3 for forward + backward).
4. An epoch of the two together, as `pipeline.train` runs it, extrapolated from `--batches` batches.

Exits 1 when the input pipeline costs more than conf/targets.yaml's train_profile.input_share of the
forward + backward time, or training reaches under train_profile.peak_share of the matmul peak. Needs
the data stages' output (`dvc repro uploads negatives`).
"""
import argparse
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipeline.models import build  # noqa: E402
from pipeline.params import load  # noqa: E402
from pipeline.train import dataset, optimizer, training_data, training_images  # noqa: E402
from testkit import targets  # noqa: E402


def matmul_gflops(dtype, n=4096, repeats=8):
    a = tf.random.uniform([n, n], dtype=tf.float32)
    a = tf.cast(a, dtype)
    product = tf.function(lambda m: tf.matmul(m, m))
    product(a).numpy()  # warm up
    started = time.perf_counter()
    for _ in range(repeats):
        out = product(a)
    out.numpy()
    return 2 * n ** 3 * repeats / (time.perf_counter() - started) / 1e9


def macs_per_image(model) -> int:
    """Multiply-adds of one forward pass, from each Conv2D's and Dense's output shape."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            k_h, k_w = layer.kernel_size
            total += h * w * c_out * k_h * k_w * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return total


def timed_fit(model, ds, steps):
    model.fit(ds, steps_per_epoch=3, epochs=1, verbose=0)  # builds and traces
    started = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return (time.perf_counter() - started) / steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", help="a variant of params.yaml (default: the one in the champion's slot)")
    parser.add_argument("--batches", type=int, default=80)
    args = parser.parse_args(argv)
    params = load()
    target = targets("train_profile")
    name = args.variant or target["variant"]
    variant = params["variants"][name]
    cfg, augment = variant["train"], (variant["augment"] if variant["augment"]["enabled"] else None)
    batch = cfg["batch_size"]
    classes = 11 if variant.get("reject") else 10

    print("peak: a 4096x4096 matmul ...", flush=True)
    peak = matmul_gflops(tf.float32)
    peak_bf16 = matmul_gflops(tf.bfloat16)
    print(f"  float32 {peak:.0f} GFLOP/s, bfloat16 {peak_bf16:.0f} GFLOP/s")

    print(f"{name}: loading its training data ...", flush=True)
    (x, y), _ = training_data(variant)
    started = time.perf_counter()
    images = training_images(x, augment)
    once = time.perf_counter() - started
    steps_per_epoch = math.ceil(len(x) / batch)
    print(f"  {len(x)} images, {steps_per_epoch} batches of {batch} an epoch; pen-width versions drawn once in {once:.1f} s")

    ds = dataset(images, y, batch, 0, augment, classes)
    it = iter(ds)
    next(it)
    started = time.perf_counter()
    for _ in range(args.batches):
        next(it)
    input_ms = (time.perf_counter() - started) / args.batches * 1000
    print(f"input pipeline alone: {input_ms:.1f} ms a batch", flush=True)

    keras.utils.set_random_seed(0)
    model = build(variant["architecture"], classes)
    model.compile(optimizer=optimizer(cfg, steps_per_epoch), loss="categorical_crossentropy", metrics=["accuracy"])
    one = next(iter(ds))
    compute_ms = timed_fit(model, tf.data.Dataset.from_tensors(one).repeat(), args.batches) * 1000
    macs = macs_per_image(model)
    achieved = 3 * 2 * macs * batch / (compute_ms / 1000) / 1e9
    print(f"forward + backward alone: {compute_ms:.1f} ms a batch ({1000 * compute_ms / batch:.0f} us an image); "
          f"{macs / 1e6:.2f} M multiply-adds an image forward -> {achieved:.0f} GFLOP/s, "
          f"{achieved / peak:.0%} of the float32 peak", flush=True)

    both_ms = timed_fit(model, ds.repeat(), args.batches) * 1000
    print(f"the two together, as training runs them: {both_ms:.1f} ms a batch -> "
          f"{both_ms * steps_per_epoch / 1000:.0f} s an epoch ({cfg['epochs']} epochs: "
          f"{both_ms * steps_per_epoch * cfg['epochs'] / 60000:.1f} min); "
          f"input {input_ms / both_ms:.0%}, compute {compute_ms / both_ms:.0%} of a batch's time when alone")

    misses = []
    if input_ms / compute_ms > target["input_share"]:
        misses.append(f"input pipeline {input_ms / compute_ms:.0%} of forward + backward (target <= {target['input_share']:.0%})")
    if achieved / peak < target["peak_share"]:
        misses.append(f"training at {achieved / peak:.0%} of the matmul peak (target >= {target['peak_share']:.0%})")
    for miss in misses:
        print(f"MISSED: {miss}")
    print("train_profile: " + ("targets met" if not misses else f"{len(misses)} target(s) missed"))
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
