"""The `negatives` stage: generated non-digits, as the server's normaliser sees them, minus what is a 1."""
import numpy as np
import pytest
from PIL import Image, ImageDraw

from digits.normalise import normalise
from pipeline import negatives


def test_real_ones_look_like_a_one_and_other_digits_do_not(mnist, one):
    """On real training digits: the rule that keeps 1-like marks out of the non-digits takes most 1s
    and almost nothing else, so the model still learns what every other digit is not."""
    x, y = mnist["x_train"][:3000], mnist["y_train"][:3000]
    taken = np.array([negatives.looks_like_a_one(image, one) for image in x])
    assert taken[y == 1].mean() > 0.85
    assert taken[y != 1].mean() < 0.02


@pytest.fixture(scope="module")
def one(params):
    """What counts as a 1 (conf/negatives/default.yaml `one`)."""
    return params["negatives"]["one"]


def drawn(draw_on):
    page = Image.new("L", (200, 200), 255)
    draw_on(ImageDraw.Draw(page))
    return normalise(np.asarray(page, np.float32) / 255)


def test_upright_bars_are_ones_lying_bars_and_crosses_are_not(one):
    assert negatives.looks_like_a_one(drawn(lambda d: d.line([(100, 20), (100, 180)], fill=0, width=12)), one)
    assert negatives.looks_like_a_one(drawn(lambda d: d.line([(80, 20), (120, 180)], fill=0, width=12)), one)  # slanted
    assert not negatives.looks_like_a_one(drawn(lambda d: d.line([(20, 100), (180, 100)], fill=0, width=12)), one)
    assert not negatives.looks_like_a_one(drawn(lambda d: (d.line([(100, 20), (100, 180)], fill=0, width=12),
                                                           d.line([(20, 100), (180, 100)], fill=0, width=12))), one)
    assert not negatives.looks_like_a_one(np.zeros((28, 28), np.float32), one)


def test_generated_non_digits_hold_no_one_and_every_kind(params, one):
    images, kinds = negatives.generate(80, [0, 2], params["negatives"])
    assert images.shape == (80, 28, 28) and images.dtype == np.uint8
    assert all(image.any() for image in images)
    assert not any(negatives.looks_like_a_one(image, one) for image in images)
    assert set(kinds) == set(negatives.GENERATORS)
    again, _ = negatives.generate(80, [0, 2], params["negatives"])
    assert np.array_equal(images, again)


def test_non_digits_are_the_same_on_any_number_of_processes(params):
    n = negatives.BLOCK + 30  # two blocks, the second short
    alone, kinds = negatives.generate(n, [0, 4], params["negatives"], workers=1)
    shared, shared_kinds = negatives.generate(n, [0, 4], params["negatives"], workers=2)
    assert alone.shape == (n, 28, 28) and np.array_equal(alone, shared) and np.array_equal(kinds, shared_kinds)
    assert not np.array_equal(alone[:30], alone[negatives.BLOCK:])  # each block has its own stream


def test_a_dim_bar_and_a_bar_with_a_dot_are_no_one_a_bar_with_stray_ink_beside_it_is(one):
    """What the model may now learn as "not a digit": a squeezed strip of noise comes out of the
    normaliser as a dim bar, a "!" as a bar with a dot past its end. A 1 with a bit of stray ink beside
    it (as some MNIST 1s have) stays a 1."""
    bar = drawn(lambda d: d.line([(100, 20), (100, 150)], fill=0, width=12))
    assert negatives.looks_like_a_one(bar, one)
    assert not negatives.looks_like_a_one(bar * 0.4, one)
    assert negatives.looks_like_a_one((bar * 255).round().astype(np.uint8), one)  # uint8 is read on its own scale
    bang = drawn(lambda d: (d.line([(100, 20), (100, 140)], fill=0, width=12), d.ellipse([92, 165, 108, 181], fill=0)))
    assert not negatives.looks_like_a_one(bang, one)
    beside = drawn(lambda d: (d.line([(100, 20), (100, 150)], fill=0, width=12), d.ellipse([120, 80, 134, 94], fill=0)))
    assert negatives.looks_like_a_one(beside, one)


def test_generated_non_digits_include_upright_marks_that_are_no_one(params, one):
    """Strips of texture and glyphs like "!" reach the training set: upright, elongated, and kept
    because they are dim or dotted. Without them the model read narrow noise and "!" as 1."""
    images, _ = negatives.generate(400, [0, 3], params["negatives"])
    upright = [image for image in images if negatives.long_and_upright(image / 255.0, one)]
    assert len(upright) >= 4
    assert not any(negatives.looks_like_a_one(image, one) for image in upright)
