"""The `uploads` stage: training digits drawn as uploads, as the server's normaliser sees them."""
import numpy as np

from digits.normalise import normalise
from pipeline import uploads


def one_of_each_class(digits):
    x, y = digits
    picks = [int(np.flatnonzero(y == d)[0]) for d in range(10)]
    return x[picks], y[picks]


def test_each_drawn_upload_is_its_own_digit_and_keeps_its_label(digits, params):
    """Real digits of ten different classes, each drawn as a random upload (fat and fine pens, photos,
    JPEGs) and normalised back: each still looks most like the digit it was drawn from, and carries its
    label."""
    x, y = one_of_each_class(digits)
    images, labels = uploads.generate(x, y, 10, [0, 3], params["uploads"], workers=1)
    assert images.dtype == np.uint8 and images.shape[1:] == (28, 28)
    clean = {int(label): normalise(digit.astype(np.float32) / 255) for digit, label in zip(x, y)}
    closest = [max(clean, key=lambda d: np.corrcoef(image.ravel(), clean[d].ravel())[0, 1]) for image in images]
    assert np.mean(np.array(closest) == labels) >= 0.8
    assert len(images) >= 9  # a blank one now and then is left out, not ten


def test_the_same_seed_draws_the_same_uploads_however_the_work_is_split(digits, params):
    x, y, cfg = *digits, params["uploads"]
    one = uploads.generate(x, y, 12, [7, 3], cfg, workers=1)
    two = uploads.generate(x, y, 12, [7, 3], cfg, workers=2)
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])
    other = uploads.generate(x, y, 12, [8, 3], cfg, workers=1)
    assert not np.array_equal(one[0], other[0])
