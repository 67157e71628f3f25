"""Issue 30's robustness rows (testkit/uploads.py): overlapping and 7-8 digit numbers, and the pages sent to
/read that are no written number. The same bytes for the same seed, each row its own stream, and the
layout what the row says: neighbours overlapping in x by 5-20% of the narrower one's width."""
import io

import numpy as np
from PIL import Image

from testkit import uploads

NEW = ["number_overlapping", "number_long", uploads.READ_DIGIT, uploads.READ_NON_DIGITS]


def test_the_new_rows_draw_the_same_bytes_for_the_same_seed(digits):
    x, y = digits
    for name in NEW:
        first = uploads.generate(name, 7, 3, x, y)
        assert len(first) == 7 and first == uploads.generate(name, 7, 3, x, y), name
        assert first != uploads.generate(name, 7, 4, x, y), name


def test_each_row_keeps_its_own_stream(digits):
    """read_single_digit draws as paper_jpeg does, from its own stream; read_non_digits is the non-digit
    kinds' own first pages, n split among them; the number rows' lengths are theirs."""
    x, y = digits
    single = uploads.generate(uploads.READ_DIGIT, 5, 0, x, y)
    assert all(label in "0123456789" and len(label) == 1 for _, label in single)
    assert [p for p, _ in single] != [p for p, _ in uploads.generate("paper_jpeg", 5, 0, x, y)]
    assert Image.open(io.BytesIO(single[0][0])).format == "JPEG"
    kinds = list(uploads.NON_DIGITS)
    pages = uploads.generate(uploads.READ_NON_DIGITS, 2 * len(kinds) + 3, 0, x, y)
    expected = [p for i, kind in enumerate(kinds) for p in uploads.generate(kind, 2 + (i < 3), 0, x, y)]
    assert pages == expected and all(label is None for _, label in pages)
    assert {len(label) for _, label in uploads.generate("number_long", 30, 0, x, y)} == {7, 8}
    assert {len(label) for _, label in uploads.generate("number_overlapping", 40, 0, x, y)} <= {2, 3, 4, 5, 6}


def ink_columns(gray):
    return np.flatnonzero((gray < gray.max()).any(axis=0))  # the paper is one level; any ink is darker


def test_overlapping_neighbours_overlap_by_5_to_20_percent_of_the_narrower_width(digits):
    x, _ = digits
    for seed in range(40):
        picks = np.random.default_rng(seed).choice(len(x), size=2 + seed % 5)
        gray, boxes = uploads.number_page(list(x[picks]), np.random.default_rng(seed), overlap=uploads.OVERLAP)
        for (x0, _, w0, _), (x1, _, w1, _) in zip(boxes, boxes[1:]):
            narrower, overlap = min(w0, w1), x0 + w0 - x1
            assert max(1, round(0.05 * narrower)) <= overlap <= max(1, round(0.2 * narrower)), (seed, boxes)
        # The page: ink from the first box's left edge to the last one's right edge, no blank column between.
        columns = ink_columns(gray)
        assert columns[0] == boxes[0][0] and columns[-1] == boxes[-1][0] + boxes[-1][2] - 1, (seed, boxes)
        assert len(columns) == columns[-1] - columns[0] + 1, seed
        # make_overlapping_number is that page as a JPEG.
        page = Image.open(io.BytesIO(uploads.make_overlapping_number(list(x[picks]), np.random.default_rng(seed))))
        assert page.size == (gray.shape[1], gray.shape[0])


def test_numbers_apart_have_a_blank_column_run_between_each_pair(digits):
    """The contrast that makes the check above mean something: `number` and `number_long` never overlap."""
    x, _ = digits
    for seed in range(20):
        rng = np.random.default_rng(seed)
        picks = rng.choice(len(x), size=8)
        gray, boxes = uploads.number_page(list(x[picks]), rng)
        assert all(x0 + w0 < x1 for (x0, _, w0, _), (x1, _, _, _) in zip(boxes, boxes[1:]))
        assert np.sum(np.diff(ink_columns(gray)) > 1) == len(boxes) - 1, seed
