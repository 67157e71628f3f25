"""What averaging trained models would give, without training an ensemble: one ONNX graph whose output
is the mean of the given models' probabilities, and MNIST accuracy for each model and for the mean.

    python benchmarks/average_onnx.py models/robust/model.onnx benchmarks/results/robust-seed43.onnx \
        --out benchmarks/results/average.onnx
    python benchmarks/member_spread.py benchmarks/results/average.onnx   # uploads: the mean and each model

The models must share the input contract ([N, 28, 28, 1] float32) and the number of classes. Accuracy
is the best of the ten digit classes, as `evaluate` scores it, on data/prepared's validation digits
(for choosing) and test digits (for reporting). The `ensemble` variant trains its members in one stage
and exports the same kind of graph (pipeline/models.py: average).
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import compose, helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.evaluate import predict  # noqa: E402
from pipeline.preprocess import load_split  # noqa: E402


def average(paths) -> onnx.ModelProto:
    """The models side by side on one input, their outputs averaged by a Mean node."""
    loaded = [onnx.load(path) for path in paths]
    first = loaded[0]
    input_name = first.graph.input[0].name
    nodes, initializers, outputs = [], [], []
    for k, model in enumerate(loaded):
        model = compose.add_prefix(model, f"m{k}_")
        own_input = model.graph.input[0].name
        for node in model.graph.node:
            node.input[:] = [input_name if name == own_input else name for name in node.input]
        nodes += model.graph.node
        initializers += model.graph.initializer
        outputs.append(model.graph.output[0].name)
    classes = first.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    graph = helper.make_graph(
        nodes + [helper.make_node("Mean", outputs, ["probabilities"])], "average", [first.graph.input[0]],
        [helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["N", classes])], initializers)
    averaged = helper.make_model(graph, opset_imports=first.opset_import)
    averaged.ir_version = first.ir_version
    onnx.checker.check_model(averaged)
    return averaged


def accuracy(model_bytes, split) -> tuple:
    x, y = load_split(split, ROOT / "data/prepared")
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    predicted = predict(session, x)[:, :10].argmax(axis=1)
    return float(np.mean(predicted == y)), int(np.sum(predicted != y))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="write the averaged graph here")
    args = parser.parse_args()
    if len(args.onnx) < 2:
        sys.exit("average_onnx: give two models or more")
    averaged = average(args.onnx)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(averaged, args.out)
    print("| model | MNIST val | MNIST test |\n|---|---:|---:|")
    rows = [(str(p), p.read_bytes()) for p in args.onnx] + [("mean of the above", averaged.SerializeToString())]
    for name, model_bytes in rows:
        cells = [f"{acc:.2%} ({errors} errors)" for acc, errors in (accuracy(model_bytes, s) for s in ("val", "test"))]
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
