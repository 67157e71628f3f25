"""The `negatives` stage: generated non-digits, as the server's normaliser sees them, minus what is a 1."""
import numpy as np
from PIL import Image, ImageDraw

from pipeline import negatives
from serve.images import normalise


def test_real_ones_look_like_a_one_and_other_digits_do_not(mnist):
    """On real training digits: the rule that keeps 1-like marks out of the non-digits takes most 1s
    and almost nothing else, so the model still learns what every other digit is not."""
    x, y = mnist["x_train"][:3000], mnist["y_train"][:3000]
    taken = np.array([negatives.looks_like_a_one(image) for image in x])
    assert taken[y == 1].mean() > 0.85
    assert taken[y != 1].mean() < 0.02


def drawn(draw_on):
    page = Image.new("L", (200, 200), 255)
    draw_on(ImageDraw.Draw(page))
    return normalise(np.asarray(page, np.float32) / 255)


def test_upright_bars_are_ones_lying_bars_and_crosses_are_not():
    assert negatives.looks_like_a_one(drawn(lambda d: d.line([(100, 20), (100, 180)], fill=0, width=12)))
    assert negatives.looks_like_a_one(drawn(lambda d: d.line([(80, 20), (120, 180)], fill=0, width=12)))  # slanted
    assert not negatives.looks_like_a_one(drawn(lambda d: d.line([(20, 100), (180, 100)], fill=0, width=12)))
    assert not negatives.looks_like_a_one(drawn(lambda d: (d.line([(100, 20), (100, 180)], fill=0, width=12),
                                                           d.line([(20, 100), (180, 100)], fill=0, width=12))))
    assert not negatives.looks_like_a_one(np.zeros((28, 28), np.float32))


def test_generated_non_digits_hold_no_one_and_every_kind():
    images, kinds = negatives.generate(80, [0, 2])
    assert images.shape == (80, 28, 28) and images.dtype == np.uint8
    assert all(image.any() for image in images)
    assert not any(negatives.looks_like_a_one(image) for image in images)
    assert set(kinds) == set(negatives.GENERATORS)
    again, _ = negatives.generate(80, [0, 2])
    assert np.array_equal(images, again)
