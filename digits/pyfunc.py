"""The registered model as MLflow's python_function flavour: image bytes in, the API's answers out.

MLflow loads it with `_load_pyfunc` (the MLmodel's `loader_module: digits.pyfunc`, written by
pipeline/register.py), so MLflow's `load_model("models:/digits@champion")` (mlflow.pyfunc) and
`mlflow models serve -m models:/digits@champion` answer what POST /predict answers, less "model": decode ->
normalise -> model.onnx -> the registered temperature -> the rejection threshold (digits.contract.answer).

Input: image bytes, base64 text or data: URLs, as a list, a pandas Series or a DataFrame with an `image`
column (what /invocations' {"dataframe_split": ...} or {"inputs": ...} give). Output: one answer dict per
image; an image that cannot be read gets {"error": {"code", "message", "status"}}, as in /predict/batch.
Runs where onnxruntime is installed (mlflow models serve's environment has it: python_env.yaml).
"""
import json
from pathlib import Path

import numpy as np

from digits.contract import answer, with_temperature
from digits.decode import ImageError, decode, from_base64
from digits.normalise import normalise

SERVING = "serving.json"  # beside model.onnx: temperature, rejection_threshold, name, version


class DigitsModel:
    def __init__(self, model_file: Path):
        import onnxruntime as ort

        self.serving = json.loads((Path(model_file).parent / SERVING).read_text())
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])

    def predict(self, model_input, params=None):
        images, said = [], []
        for item in rows(model_input):
            try:
                images.append(normalise(decode(as_bytes(item))))
                said.append(None)
            except ImageError as e:
                said.append({"error": {"code": e.code, "message": e.message, "status": e.status}})
        if images:
            batch = np.stack(images)[..., None].astype(np.float32)
            probabilities = self.session.run(None, {self.session.get_inputs()[0].name: batch})[0]
            temperature = float(self.serving["temperature"])
            if temperature != 1.0:
                probabilities = with_temperature(probabilities, temperature)
            read = iter(answer(i, p, float(self.serving["rejection_threshold"])) for i, p in zip(images, probabilities))
            said = [s if s is not None else next(read) for s in said]
        return said


def rows(model_input) -> list:
    if hasattr(model_input, "columns"):  # a pandas DataFrame
        column = "image" if "image" in model_input.columns else model_input.columns[0]
        return list(model_input[column])
    if isinstance(model_input, dict):
        return list(model_input.get("image", next(iter(model_input.values()), [])))
    if isinstance(model_input, (bytes, str)):
        return [model_input]
    return list(model_input)


def as_bytes(item) -> bytes:
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if not isinstance(item, str):
        raise ImageError("not_an_image", f"an image is bytes or base64 text, not {type(item).__name__}", 400)
    return from_base64(item)


def _load_pyfunc(model_file):
    """MLflow's entry point: the path of the flavour's `data`, model.onnx."""
    return DigitsModel(Path(model_file))
