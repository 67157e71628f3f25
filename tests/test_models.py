import numpy as np
import pytest

from pipeline.models import build
from pipeline.params import compose_params


@pytest.mark.parametrize("name", ["dense", "cnn", "strong"])
def test_each_variant_builds_and_outputs_probabilities(name, digits):
    model = build(compose_params()["variants"][name]["architecture"])
    x = (digits[0][:8].astype(np.float32) / 255.0)[..., None]
    out = np.asarray(model(x, training=False))
    assert out.shape == (8, 10)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert model.input_shape == (None, 28, 28, 1)


def test_the_classic_cnn_is_the_keras_io_convnet():
    # keras.io "Simple MNIST convnet" has exactly 34,826 parameters.
    assert build(compose_params()["variants"]["cnn"]["architecture"]).count_params() == 34826


def test_an_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown architecture kind 'transformer'"):
        build({"kind": "transformer"})
