"""INT8 against float in process: digits/s of the served champion's two copies on this CPU.

    python benchmarks/int8.py [--seconds 1.0]

Prints what the CPU offers for INT8 and bf16 (AVX-512 VNNI, AVX-VNNI, AMX), then digits/s of the float
champion (digits@F) and of its INT8 copy (digits-int8@Q, pipeline/quantise.py) at batch 1, 64 and 1024 on
1 and 2 onnxruntime threads, the ratio INT8/float in the same run, the same INT8 model in QOperator form
(QLinearConv ..., made here from the same calibration), onnxruntime's session options (graph
optimisation level, spinning threads) on the INT8 copy, and how often the two copies' best digit agrees
on the 10,000 MNIST test digits. Needs the registry (make repro) and data/ (the calibration images).
Target (conf/targets.yaml `int8`): INT8 batched at least 20,000 digits/s; exits 1 when missed, or when
no INT8 copy serves.
"""
import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from digits.contract import to_input
from pipeline.params import load
from pipeline.preprocess import load_split
from serve.model import Registry
from testkit import targets

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def cpu():
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.processor())
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    return name, [f for f in FLAGS if f in flags], [f for f in FLAGS if f not in flags]


def session(model_bytes, threads, level="all", spinning=True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def rate(sess, x, batch, seconds):
    """Digits/s: batches of `batch` from x, repeated for about `seconds` after a warm-up; best of 3 rounds."""
    name = sess.get_inputs()[0].name
    batches = [x[i:i + batch] for i in range(0, len(x) - batch + 1, batch)] or [x[:batch]]
    for b in batches[:3]:
        sess.run(None, {name: b})
    best = 0.0
    for _ in range(3):
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            for b in batches[:max(1, 4096 // batch)]:
                sess.run(None, {name: b})
                done += len(b)
        best = max(best, done / (time.perf_counter() - start))
    return best


def qoperator_copy(float_bytes):
    """The same static quantisation as the pipeline's, in QOperator form."""
    from pipeline.quantise import calibration_images, quantise

    params = load()
    cfg = {**params["quantise"], "format": "qoperator"}
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "float.onnx", Path(tmp) / "qop.onnx"
        source.write_bytes(float_bytes)
        quantise(source, out, calibration_images(cfg["calibration"], params["seed"]), cfg)
        return out.read_bytes()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per figure")
    args = parser.parse_args()
    import onnxruntime as ort

    goal = targets("int8")
    name, has, lacks = cpu()
    print(f"CPU: {name}; has {' '.join(has) or '-'}; lacks {' '.join(lacks) or '-'}")
    print(f"onnxruntime {ort.__version__}, providers {', '.join(ort.get_available_providers())}")
    served = Registry().load()
    if served.quantised_from is None:
        sys.exit(f"int8: no INT8 copy serves: {served.note or 'MODEL_PRECISION=float'}; run `dvc repro quantise`")
    fp32 = Registry(precision="float").load()
    print(f"float {fp32.label} ({len(fp32.model_bytes):,} bytes), INT8 {served.label} ({len(served.model_bytes):,} "
          f"bytes, from {served.quantised_from})")
    x_test, y_test = load_split("test")
    x = to_input(x_test)

    models = {"float": fp32.model_bytes, "int8 qdq": served.model_bytes, "int8 qoperator": qoperator_copy(fp32.model_bytes)}
    print(f"\n{'digits/s':>16} | " + " | ".join(f"batch {b:>4}, {t} thr" for b in (1, 64, 1024) for t in (1, 2)))
    figures = {}
    for label, model_bytes in models.items():
        row = []
        for batch in (1, 64, 1024):
            for threads in (1, 2):
                figures[label, batch, threads] = rate(session(model_bytes, threads), x, batch, args.seconds)
                row.append(f"{figures[label, batch, threads]:>16,.0f}")
        print(f"{label:>16} | " + " | ".join(row))
    print(f"{'int8/float':>16} | " + " | ".join(f"{figures['int8 qdq', b, t] / figures['float', b, t]:>15.2f}x"
                                              for b in (1, 64, 1024) for t in (1, 2)))

    print("\nsession options, INT8 (QDQ), batch 1024, 2 threads:")
    for level in ("basic", "extended", "all"):
        for spinning in (True, False):
            speed = rate(session(served.model_bytes, 2, level, spinning), x, 1024, args.seconds)
            print(f"  graph optimisation {level:>8}, spinning {'on ' if spinning else 'off'}: {speed:>9,.0f} digits/s")

    answers = {}
    for label in ("float", "int8 qdq"):
        sess = session(models[label], 2)
        name_in = sess.get_inputs()[0].name
        answers[label] = np.concatenate([sess.run(None, {name_in: x[i:i + 1000]})[0][:, :10].argmax(axis=1)
                                         for i in range(0, len(x), 1000)])
    agree = float((answers["float"] == answers["int8 qdq"]).mean())
    errors = {k: int((v != y_test).sum()) for k, v in answers.items()}
    print(f"\nMNIST test: best digit the same for {agree:.2%}; errors float {errors['float']}, INT8 {errors['int8 qdq']}")

    best = max(figures["int8 qdq", 1024, t] for t in (1, 2))
    ok = best >= goal["digits_per_s"]
    print(f"\nINT8 batched: {best:,.0f} digits/s (target at least {goal['digits_per_s']:,}): {'ok' if ok else 'MISSED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
