"""digits/line.py: a written number's page -> the reader's strip, and the reader's frames -> digits and boxes."""
import numpy as np
import pytest

from digits import line as lines
from digits.decode import decode
from testkit.uploads import number_page, make_number


def frames_for(tokens, length=20):
    """One-hot frames [length, 12]: blank everywhere but at the given {frame: class}."""
    frames = np.full((length, lines.CLASSES), 0.001, np.float32)
    frames[:, lines.BLANK] = 0.99
    for t, c in tokens.items():
        frames[t] = 0.001
        frames[t, c] = 0.99
    return frames


def test_greedy_ctc_merges_repeats_and_splits_them_at_a_blank():
    frames = frames_for({2: 1, 3: 1, 5: 1, 9: 7, 10: 7, 14: lines.NOT_A_DIGIT})
    assert lines.greedy_text(frames) == "117?"
    tokens = lines.decode(frames)
    assert [c for c, _, _ in tokens] == [1, 1, 7, lines.NOT_A_DIGIT]
    for c, p, _ in tokens:
        assert p.shape == (11,) and p.sum() == pytest.approx(1) and p.argmax() == c
    columns = [cols for _, _, cols in tokens]
    assert columns[0][0] == 0 and columns[-1][1] == 20 * lines.STRIDE  # the whole strip, split between tokens
    assert all(a[1] == b[0] for a, b in zip(columns, columns[1:]))


def test_frames_past_the_strip_are_padding():
    frames = frames_for({2: 3, 12: 4})
    assert lines.greedy_text(frames) == "34"
    assert lines.greedy_text(frames, strip_width=10 * lines.STRIDE) == "3"


def test_a_blank_page_has_no_line():
    assert lines.line(np.ones((80, 200), np.float32)) is None


@pytest.fixture(scope="module")
def digits(mnist):
    return mnist["x_test"][:40], mnist["y_test"][:40]


def test_a_written_number_becomes_a_strip_of_its_line(digits):
    x, _ = digits
    rng = np.random.default_rng(0)
    page = decode(make_number(list(x[:5]), rng))
    strip = lines.line(page)
    image = strip.image
    assert image.shape[0] == lines.HEIGHT and image.shape[1] % lines.STRIDE == 0 and image.dtype == np.float32
    assert 0 <= image.min() and image.max() <= 1 and image.max() > 0.9
    rows = np.flatnonzero(image.max(axis=1) > 0)
    assert rows[-1] - rows[0] + 1 <= lines.BOX + 1  # the line's ink is MNIST's 20 px tall
    assert image[:, :lines.PAD - 1].max() == 0  # black margins
    assert 5 * 8 < image.shape[1] <= lines.MAX_WIDTH


def test_boxes_map_strip_columns_back_to_the_digits_on_the_page(digits):
    """Each digit's columns in the strip give back its own box on the uploaded page (within a few px)."""
    x, _ = digits
    rng = np.random.default_rng(3)
    gray, boxes = number_page(list(x[5:9]), rng, gap=(0.3, 0.6))
    strip = lines.line(gray / 255.0)
    ink = strip.image.max(axis=0) > 0
    # the strip's runs of ink columns, one per digit (they stand apart)
    starts = np.flatnonzero(ink & ~np.r_[False, ink[:-1]])
    ends = np.flatnonzero(ink & ~np.r_[ink[1:], False]) + 1
    assert len(starts) == len(boxes) == 4
    for (c0, c1), (x0, y0, w, h) in zip(zip(starts, ends), boxes):
        bx, by, bw, bh = strip.box(int(c0), int(c1))
        slack = 0.15 * h + 3
        assert abs(bx - x0) < slack and abs(bx + bw - (x0 + w)) < slack
        assert abs(by - y0) < slack and abs(by + bh - (y0 + h)) < slack


def test_a_very_long_line_is_shrunk_to_the_widest_strip(digits):
    x, _ = digits
    rng = np.random.default_rng(1)
    page = decode(make_number(list(x[:30]), rng, gap=(1.0, 1.2)))
    strip = lines.line(page)
    assert strip.image.shape[1] == lines.MAX_WIDTH and strip.image.max() > 0.5
    batch = lines.batch([strip.image, strip.image[:, :40]])
    assert batch.shape == (2, lines.HEIGHT, lines.MAX_WIDTH, 1) and batch[1, :, 40:].max() == 0


def test_with_the_strip_neighbours_are_parted_at_the_faintest_column_between_them():
    """CTC puts a token's frames anywhere in its digit (here: at its left edge, even before its ink); the
    cut between two neighbours is where the ink between their frames is faintest."""
    image = np.zeros((lines.HEIGHT, 60), np.float32)
    image[4:24, 4:14] = 1  # a digit alone
    image[4:24, 18:28] = 1
    image[4:24, 30:40] = 1  # two touching digits, joined by a faint bridge at 40:42
    image[10:12, 40:42] = 0.2
    image[4:24, 42:52] = 1
    frames = frames_for({1: 3, 9: 5, 15: 6, 21: 7}, length=30)  # centres at columns 3, 19, 31 and 43
    columns = [cols for _, _, cols in lines.decode(frames, image=image)]
    assert columns[0] == (0, 14) and columns[1] == (14, 28) and columns[2] == (28, 40) and columns[3] == (40, 60)
