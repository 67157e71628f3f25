"""Models for tests that must be refused."""
import numpy as np


def zeros_model() -> bytes:
    """A well-formed ONNX model with the right contract that says 0 for everything: must fail the self-test."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["p"])],
        "zeros", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 28, 28, 1])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [None, 10])],
        [helper.make_tensor("w", TensorProto.FLOAT, [784, 10], np.zeros(7840, np.float32))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
