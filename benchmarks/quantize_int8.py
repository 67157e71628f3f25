"""Would an INT8 copy of the champion serve faster, and read validation digits as well?

    python benchmarks/quantize_int8.py          # the registered champion; writes benchmarks/results/champion-int8.onnx

Static quantization (onnxruntime.quantization, QDQ, per-channel INT8 weights, UINT8 activations)
calibrated on 1,000 MNIST *validation* digits. Prints, for the float model and the INT8 copy, one
digit's onnxruntime latency (one thread, as the server runs it: median of 5 rounds of 1,000 calls),
MNIST validation errors, held-out non-digits under the champion's threshold (uncalibrated
probabilities, both models alike), and the largest change of any probability. The INT8 model takes
and returns the same tensors (float32 [N, 28, 28, 1] -> [N, classes]), so it would fit the model
contract; nothing in the pipeline makes or serves it.
"""
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from serve.model import load_champion, onnx_session  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "champion-int8.onnx"


def int8_copy(model_bytes, calibration, work):
    """The model quantized to INT8, calibrated on `calibration` (float32 [N, 28, 28, 1]) -> its bytes."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    (work / "float.onnx").write_bytes(model_bytes)
    quant_pre_process(str(work / "float.onnx"), str(work / "prepared.onnx"), skip_symbolic_shape=True)
    input_name = onnx_session(model_bytes).get_inputs()[0].name

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{input_name: calibration[i:i + 50]} for i in range(0, len(calibration), 50)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(work / "prepared.onnx"), str(OUT), Batches(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    return OUT.read_bytes()


def latency_ms(session, one):
    name = session.get_inputs()[0].name
    for _ in range(100):
        session.run(None, {name: one})
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(1000):
            session.run(None, {name: one})
        rounds.append(time.perf_counter() - started)
    return float(np.median(rounds))  # seconds per 1,000 calls = ms per call


def probabilities(session, x):
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 500]})[0] for i in range(0, len(x), 500)])


def main():
    champion = load_champion()
    val = np.load(ROOT / "data/prepared/val.npz")
    x, y = (val["x"] / 255.0).astype(np.float32)[..., None], val["y"]
    negatives = (np.load(ROOT / "data/drawn/negatives/val.npy") / 255.0).astype(np.float32)[..., None]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    work = OUT.parent / "int8-work"
    work.mkdir(exist_ok=True)
    models = {"float32 (served)": champion.model_bytes, "INT8 copy": int8_copy(champion.model_bytes, x[:1000], work)}

    print(f"champion {champion.label}; MNIST validation ({len(x)} digits, the first 1,000 calibrate INT8), "
          f"{len(negatives)} held-out non-digits, threshold {champion.rejection_threshold:.3f}\n")
    print("| model | ms per digit (1 thread) | MNIST val errors | non-digits under the threshold | max change of a probability |")
    print("|---|---:|---:|---:|---:|")
    reference = None
    for name, model_bytes in models.items():
        session = onnx_session(model_bytes, threads=1)
        p_val, p_neg = probabilities(session, x), probabilities(session, negatives)
        reference = p_val if reference is None else reference
        print(f"| {name} | {latency_ms(session, x[:1]):.3f} | {int((p_val[:, :10].argmax(axis=1) != y).sum())} | "
              f"{(p_neg[:, :10].max(axis=1) < champion.rejection_threshold).mean():.2%} | "
              f"{float(np.abs(p_val - reference).max()):.4f} |")


if __name__ == "__main__":
    main()
