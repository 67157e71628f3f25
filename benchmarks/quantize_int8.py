"""Would an INT8 copy of the champion serve faster, and read validation digits as well?

    python benchmarks/quantize_int8.py      # the registered champion; writes benchmarks/results/champion-*.onnx

Static quantization (onnxruntime.quantization, QDQ, per-channel INT8 weights, UINT8 activations)
calibrated on 1,000 MNIST *validation* digits. Prints, for the float model and the INT8 copy, one
digit's onnxruntime latency (one thread, as the server runs it: the evaluate stage's median of 5,000
calls), MNIST validation errors, held-out non-digits under the champion's threshold (uncalibrated
probabilities, both models alike), and the largest change of any probability. The INT8 model takes
and returns the same tensors (float32 [N, 28, 28, 1] -> [N, classes]), so it would fit the model
contract; nothing in the pipeline makes or serves it.
"""
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.evaluate import latency_ms, onnx_session, predict  # noqa: E402
from serve.model import load_champion  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FLOAT, INT8 = RESULTS / "champion-float32.onnx", RESULTS / "champion-int8.onnx"


def int8_copy(calibration):
    """The file FLOAT quantized into the file INT8, calibrated on `calibration` (float32 [N, 28, 28, 1])."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = RESULTS / "champion-prepared.onnx"
    quant_pre_process(str(FLOAT), str(prepared), skip_symbolic_shape=True)
    input_name = onnx_session(FLOAT).get_inputs()[0].name

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{input_name: calibration[i:i + 50]} for i in range(0, len(calibration), 50)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(prepared), str(INT8), Batches(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)


def main():
    champion = load_champion()
    val = np.load(ROOT / "data/prepared/val.npz")
    x, y = val["x"], val["y"]
    negatives = np.load(ROOT / "data/drawn/negatives/val.npy")
    RESULTS.mkdir(parents=True, exist_ok=True)
    FLOAT.write_bytes(champion.model_bytes)
    int8_copy((x[:1000] / 255.0).astype(np.float32)[..., None])

    print(f"champion {champion.label}; MNIST validation ({len(x)} digits, the first 1,000 calibrate INT8), "
          f"{len(negatives)} held-out non-digits, threshold {champion.rejection_threshold:.3f}\n")
    print("| model | ms per digit (1 thread) | MNIST val errors | non-digits under the threshold | max change of a probability |")
    print("|---|---:|---:|---:|---:|")
    reference = None
    for name, path in (("float32 (served)", FLOAT), ("INT8 copy", INT8)):
        session = onnx_session(path)
        p_val, p_neg = predict(session, x), predict(session, negatives)
        reference = p_val if reference is None else reference
        median_ms, _ = latency_ms(path, (x[:1] / 255.0).astype(np.float32)[..., None], 5000)
        print(f"| {name} | {median_ms:.3f} | {int((p_val[:, :10].argmax(axis=1) != y).sum())} | "
              f"{(p_neg[:, :10].max(axis=1) < champion.rejection_threshold).mean():.2%} | "
              f"{float(np.abs(p_val - reference).max()):.4f} |")


if __name__ == "__main__":
    main()
