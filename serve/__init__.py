"""digits serving: a Flask app answering with the MLflow-registered champion (ONNX, no TensorFlow)."""
from serve.app import create_app

__all__ = ["create_app"]
