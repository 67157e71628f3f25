"""pipeline/models.py `reader`: the digit network slid along a strip, its trained weights copied in, and the
ONNX export with a free width that agrees with Keras."""
import keras
import numpy as np
import pytest

from digits import line as lines
from pipeline.models import build, init_trunk, reader
from pipeline.reader import batches, export_onnx, targets

TRUNK = {"kernel": 5, "stages": [[8], [16]], "hidden": 32}
DIGIT = {"kind": "cnn", "stages": [[8], [16]], "kernel": 5, "padding": "valid", "batch_norm": False,
         "head": "flatten", "hidden": 32, "dropout": 0.0}
ARCH = {"trunk": TRUNK, "features": 16, "context": [3], "dropout": 0.0}


def test_each_trunk_column_is_the_digit_networks_hidden_layer_on_the_window_there():
    keras.utils.set_random_seed(0)
    digit = build(DIGIT, classes=11)
    model = reader(ARCH)
    init_trunk(model, digit)
    strip = np.random.default_rng(0).random((1, 28, 40, 1)).astype(np.float32)
    columns = keras.Model(model.input, model.get_layer("columns").output)(strip).numpy()[0]  # [W/2, hidden]
    hidden = keras.Model(digit.input, [layer for layer in digit.layers if isinstance(layer, keras.layers.ReLU)][0].output)
    padded = np.pad(strip, ((0, 0), (0, 0), (12, 14), (0, 0)))
    windows = np.concatenate([padded[:, :, 2 * k:2 * k + 28] for k in range(40 // 2)])  # one every 2 px
    assert columns.shape == (20, 32)
    np.testing.assert_allclose(columns, hidden(windows).numpy(), atol=1e-5)


def test_a_digit_model_of_another_shape_is_refused_with_the_shapes():
    model = reader(ARCH)
    other = build({**DIGIT, "stages": [[8], [24]]}, classes=11)
    with pytest.raises(ValueError, match="not the reader's trunk"):
        init_trunk(model, other)


def test_frames_are_half_the_width_at_any_width_and_onnx_agrees(tmp_path):
    keras.utils.set_random_seed(1)
    logits = reader(ARCH)
    model = keras.Model(logits.input, keras.layers.Softmax()(logits.output))
    rng = np.random.default_rng(0)
    strips = [(rng.random((28, w)) * 255).astype(np.uint8) for w in (16, 36, 64, 100, 132)]
    for x, *_ in batches(strips, [""] * len(strips), 2):
        assert model(x).shape == (len(x), x.shape[2] // lines.STRIDE, lines.CLASSES)
    assert export_onnx(model, tmp_path / "reader.onnx", strips) < 1e-4


def test_batches_group_strips_by_width_and_keep_every_label():
    rng = np.random.default_rng(0)
    strips = [np.full((28, w), 255, np.uint8) for w in (20, 30, 40, 90, 100)]
    texts = ["1", "22", "?", "4096", "12345678"]
    seen = {}
    for x, labels, lengths, frames, index in batches(strips, texts, 2, rng):
        assert x.shape[2] % 32 == 0 and x.shape[2] >= max(strips[k].shape[1] for k in index)
        for row, k in enumerate(index):
            seen[k] = labels[row][:lengths[row]].tolist()
            assert frames[row] == strips[k].shape[1] // lines.STRIDE
            assert x[row, :, strips[k].shape[1]:].max(initial=0) == 0  # padding is black
    assert seen == {k: targets([t])[0][0][:len(t)].tolist() for k, t in enumerate(texts)}
    assert seen[2] == [lines.NOT_A_DIGIT]


def test_training_strips_are_squeezed_stretched_and_moved_but_keep_their_ink():
    from pipeline.reader import augmented

    rng = np.random.default_rng(0)
    strip = np.zeros((28, 60), np.uint8)
    strip[6:22, 8:50] = 255
    seen = augmented([strip] * 50, rng, {"width_scale": 0.2, "shift_px": 2})
    widths = {s.shape[1] for s in seen}
    assert min(widths) >= 48 and max(widths) <= 72 and len(widths) > 5 and all(s.shape[0] == 28 for s in seen)
    assert all(s[:4].max() == 0 or s[-4:].max() == 0 for s in seen) and all(s.max() == 255 for s in seen)
