import numpy as np
import pytest

from pipeline.models import average, build
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


def test_an_ensemble_is_one_model_that_outputs_its_members_mean(digits):
    arch = model_config("cnn")["architecture"]
    members = [build(arch, classes=11) for _ in range(2)]
    ensemble = average(members)
    x = (digits[0][:8].astype(np.float32) / 255.0)[..., None]
    outputs = [np.asarray(m(x, training=False)) for m in members]
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-3  # two initialisations, two models
    np.testing.assert_allclose(np.asarray(ensemble(x, training=False)), (outputs[0] + outputs[1]) / 2, atol=1e-6)
    assert ensemble.input_shape == (None, 28, 28, 1) and ensemble.output_shape == (None, 11)
    assert ensemble.count_params() == 2 * members[0].count_params()
