import numpy as np
import pytest

from pipeline.models import build
from pipeline.params import CONF_DIR, model_config


MODEL_CONFIGS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def test_the_model_group_has_the_variants_and_the_extra_recipes():
    assert {"dense", "cnn", "strong", "strong_long", "fast"} <= set(MODEL_CONFIGS)


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_each_model_config_builds_and_outputs_probabilities(name, digits):
    model = build(model_config(name)["architecture"])
    x = (digits[0][:8].astype(np.float32) / 255.0)[..., None]
    out = np.asarray(model(x, training=False))
    assert out.shape == (8, 10)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert model.input_shape == (None, 28, 28, 1)


def test_the_classic_cnn_is_the_keras_io_convnet():
    # keras.io "Simple MNIST convnet" has exactly 34,826 parameters.
    assert build(model_config("cnn")["architecture"]).count_params() == 34826


def test_the_long_recipe_is_the_strong_one_trained_longer():
    strong, long = model_config("strong"), model_config("strong_long")
    assert long["train"]["epochs"] > strong["train"]["epochs"]
    long["train"]["epochs"] = strong["train"]["epochs"]
    assert long == strong


def test_an_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown architecture kind 'transformer'"):
        build({"kind": "transformer"})
