"""How far apart trainings of the same recipe read upload-like *validation* images: each model given,
and each member of an ensemble, read on its own.

    python benchmarks/member_spread.py models/ensemble/model.onnx models/robust/model.onnx
    python benchmarks/member_spread.py --serve /tmp/old-serve OTHER/model.onnx   # another normaliser

An ensemble's model.onnx (pipeline/models.py: average) holds one softmax per member; each is cut out
into a model of its own, so two members plus a separately trained model are three trainings on the
same data. TensorFlow on CPU does not repeat itself, so even the same seed trains a different model.
A digit is right when the argmax over all classes is its label; numbers are read as /read reads them,
with temperature 1 and one rejection threshold for every model, so models compare with each other
(not with the served champion's calibrated figures). --serve puts another checkout's serve/ first on
the path: the normaliser a model was trained with.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent


def models(path: Path) -> dict:
    """{name: model}: the file itself, and each of its softmax outputs when it has more than one."""
    model = onnx.shape_inference.infer_shapes(onnx.load(path))
    softmaxes = [n.output[0] for n in model.graph.node if n.op_type == "Softmax"]
    found = {str(path): model}
    if len(softmaxes) > 1:
        for k, name in enumerate(softmaxes):
            found[f"{path} member {k}"] = onnx.utils.Extractor(model).extract_model([model.graph.input[0].name], [name])
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", nargs="+", type=Path)
    parser.add_argument("--n", type=int, default=2000, help="digits per single-digit condition")
    parser.add_argument("--numbers", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=0.2, help="rejection threshold for every model")
    parser.add_argument("--serve", type=Path, default=ROOT, help="the checkout whose serve/ normalises")
    args = parser.parse_args()

    sys.path[:0] = [str(args.serve.resolve()), str(ROOT)]
    import serve.images
    import serve.segment  # both from --serve before benchmarks/ puts this checkout first on the path
    from benchmarks import robustness as rb
    from benchmarks.read_bonus import number
    from serve.images import decode, normalise
    from serve.model import Champion, onnx_session
    for module in (serve.images, serve.segment):
        assert Path(module.__file__).is_relative_to(args.serve.resolve()), module.__file__

    def reader(name, model):  # temperature 1 (no tag), the same threshold for every model
        return Champion(name=name, version="", alias="", run_id="", sha256="", source="file",
                        tags={"rejection_threshold": args.threshold}, session=onnx_session(model.SerializeToString()))

    readers = {name: reader(name, m) for path in args.onnx for name, m in models(path).items()}
    val = np.load(ROOT / "data/prepared/val.npz")
    scores = {name: [] for name in readers}
    for condition in ("thick_pen", "thin_pen"):
        items = rb.generate(condition, args.n, args.seed, val["x"], val["y"])
        x = np.stack([normalise(decode(data)) for data, _ in items])[..., None]
        y = np.array([label for _, label in items])
        for name, reader in readers.items():
            scores[name].append(np.mean(reader.calibrated(x).argmax(axis=1) == y))
    pages = [(decode(data), label) for data, label in rb.generate("number", args.numbers, args.seed, val["x"], val["y"])]
    for name, reader in readers.items():
        scores[name].append(np.mean([number(gray, reader, 1.0) == label for gray, label in pages]))

    print(f"validation, seed {args.seed}: {args.n} digits per pen, {args.numbers} numbers; serve/ from {args.serve}\n")
    print("| model | thick_pen | thin_pen | number (exact) |\n|---|---:|---:|---:|")
    for name, row in scores.items():
        print(f"| {name} | " + " | ".join(f"{v:.2%}" for v in row) + " |")


if __name__ == "__main__":
    main()
