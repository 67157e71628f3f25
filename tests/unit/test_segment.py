"""digits/segment.py: a written number -> its digits, on pages drawn from real MNIST test digits."""
import numpy as np
import pytest
from PIL import Image, ImageDraw

from digits.blobs import components
from digits.ink import ink_map
from digits.normalise import to_mnist
from digits.segment import read, segment


@pytest.fixture(scope="module")
def glyphs(mnist):
    """glyph(i, height): test digit i cropped to its ink and scaled to `height` px, ink coverage in [0, 1]."""
    x = mnist["x_test"]

    def glyph(i, height=80):
        d = x[i]
        rows, cols = np.flatnonzero(d.max(axis=1) > 40), np.flatnonzero(d.max(axis=0) > 40)
        crop = d[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        width = max(2, round(crop.shape[1] * height / crop.shape[0]))
        return np.asarray(Image.fromarray(crop).resize((width, height), Image.BILINEAR), np.float32) / 255
    return glyph


def page(pieces, gaps, jitter=None):
    """Dark ink on white: pieces left to right with the given gaps (negative: overlapping), [H, W] in [0, 1]."""
    jitter = jitter or [0] * len(pieces)
    width = sum(p.shape[1] for p in pieces) + sum(gaps) + 80
    ink = np.zeros((200, width), np.float32)
    x = 40
    for i, (piece, dy) in enumerate(zip(pieces, jitter)):
        region = ink[50 + dy:50 + dy + piece.shape[0], x:x + piece.shape[1]]
        np.maximum(region, piece, out=region)
        x += piece.shape[1] + (gaps[i] if i < len(gaps) else 0)
    return 1 - ink


def test_components_are_8_connected_with_their_own_masks():
    ink = np.zeros((10, 12), np.float32)
    ink[1, 1] = ink[2, 2] = ink[3, 3] = 1.0  # a diagonal: one component through its corners
    ink[5:9, 8] = 0.5  # a bar
    parts = sorted(components(ink, 0.0), key=lambda p: p.x0)
    assert [(p.box, p.mask.sum()) for p in parts] == [([1, 1, 3, 3], 3), ([8, 5, 1, 4], 4)]
    assert parts[1].mass == pytest.approx(2.0)


def test_digits_with_uneven_gaps_and_jitter_come_out_left_to_right(glyphs, mnist):
    picks = [3, 2, 1, 18, 4, 8]  # 0 1 2 3 4 5
    pieces = [glyphs(i) for i in picks]
    found = segment(page(pieces, gaps=[12, 40, 25, 60, 18], jitter=[0, 14, -9, 20, 3, -15]))
    assert len(found) == 6
    xs = [box[0] for box, _ in found]
    assert xs == sorted(xs)
    for (box, image), i in zip(found, picks):  # each digit is the test digit, MNIST-style again
        assert box[3] == pytest.approx(80, abs=2)
        assert np.corrcoef(image.ravel(), to_mnist(glyphs(i)).ravel())[0, 1] > 0.95


def test_a_broken_stroke_and_specks_do_not_make_extra_digits(glyphs):
    one, seven = glyphs(2), glyphs(0)  # test digits 2 and 0 are a 1 and a 7
    broken = seven.copy()
    broken[38:41] = 0  # a faint band of paper across the 7: two components
    gray = page([one, broken], gaps=[30])
    gray[10:12, 10:12] = 0.2  # dust far from the digits
    gray[150:152, 60:62] = 0.3
    found = segment(gray)
    assert len(found) == 2
    assert found[1][0][3] >= 78  # the 7 in one piece, top to bottom


def test_a_floating_bar_joins_its_digit():
    image = Image.new("L", (200, 160), 255)
    draw = ImageDraw.Draw(image)
    draw.line([(60, 30), (100, 30)], fill=0, width=7)  # a 5 drawn in two strokes: the bar ...
    draw.line([(60, 40), (58, 75), (95, 78), (100, 110), (60, 125)], fill=0, width=7, joint="curve")  # ... and the rest
    found = segment(np.asarray(image, np.float32) / 255)
    assert len(found) == 1 and found[0][0][1] <= 30


def test_touching_digits_are_cut_apart_where_the_ink_is_thinnest(glyphs):
    gray = page([glyphs(2), glyphs(3)], gaps=[-12])  # a 1 leaning into a 0
    assert len(components(ink_map(gray), 0.02)) == 1  # they really touch
    found = segment(gray)
    assert len(found) == 2
    (one, _), (zero, _) = found
    assert one[2] < 0.6 * zero[2]  # the cut leaves the 1 narrow and the 0 whole


def test_reading_lets_the_model_join_pieces_geometry_left_apart(glyphs):
    """An open 0 (two arcs) stays two pieces by geometry; a model that knows a 0 when it sees one joins
    them, and one that calls the joined blob "not a digit" (index 10) keeps them apart."""
    zero = glyphs(3).copy()
    zero[:, zero.shape[1] // 2 - 2:zero.shape[1] // 2 + 2] = 0  # a gap down the middle
    gray = page([zero], gaps=[])
    assert len(segment(gray)) == 2

    def knows_zero(batch):
        wide = (batch[..., 0] > 0.3).any(axis=1).sum(axis=1) > 14  # the joined 0 is wide, arcs are not
        p = np.full((len(batch), 11), 0.001, np.float32)
        p[wide, 0], p[~wide, 1] = 0.99, 0.5
        return p

    def rejects_blobs(batch):
        p = knows_zero(batch)
        wide = p[:, 0] > 0.5
        p[wide, 0], p[wide, 10] = 0.001, 0.99
        return p

    assert len(read(gray, knows_zero)) == 1
    assert len(read(gray, rejects_blobs)) == 2
    for box, image, probabilities in read(gray, rejects_blobs):  # the model's answer for the digit chosen
        assert np.array_equal(probabilities, rejects_blobs(image[None, ..., None])[0])
    assert read(np.ones((50, 50), np.float32), knows_zero) == []


def test_a_cut_through_one_blob_earns_no_bonus_but_a_gap_between_blobs_does(glyphs):
    """A wide 6 is one blob that geometry cuts in two; two 6s side by side are two blobs. To a model
    exactly as sure of the whole as of each half, the wide 6 is one digit and the pair two: each digit
    read from separate ink earns the bonus, a cut through one stroke must earn it from the model."""
    six = glyphs(22)
    wide = np.asarray(Image.fromarray((six * 255).astype(np.uint8)).resize((six.shape[1] * 2, six.shape[0]),
                                                                             Image.BILINEAR), np.float32) / 255
    gray = page([wide], gaps=[])
    assert len(components(ink_map(gray), 0.02)) == 1 and len(segment(gray)) == 2  # one blob, cut in two

    def equally_sure(batch):
        p = np.full((len(batch), 11), 0.01, np.float32)
        p[:, 6] = 0.9
        return p

    assert len(read(gray, equally_sure)) == 1
    assert len(read(page([six, six], gaps=[15]), equally_sure)) == 2


def test_a_number_on_a_page_over_a_megapixel_is_read_reduced_with_boxes_on_the_upload(glyphs):
    """Pages over read_pixels are read box-reduced (labelling noise costs in proportion to the
    pixels); the digits are the same and the boxes are in the uploaded page's pixels."""
    picks = [3, 2, 1]  # 0 1 2
    pieces = [glyphs(i, height=300) for i in picks]
    ink = np.zeros((1400, 1500), np.float32)  # 2.1 MP
    lefts = [300, 300 + pieces[0].shape[1] + 60, 300 + pieces[0].shape[1] + pieces[1].shape[1] + 150]
    for piece, left in zip(pieces, lefts):
        ink[500:800, left:left + piece.shape[1]] = piece
    found = segment(1 - ink)
    assert len(found) == 3
    for (box, image), i, left in zip(found, picks, lefts):
        assert box[0] == pytest.approx(left, abs=4) and box[3] == pytest.approx(300, abs=4)  # the upload's pixels
        assert np.corrcoef(image.ravel(), to_mnist(glyphs(i)).ravel())[0, 1] > 0.9


@pytest.mark.parametrize("height", [60, 80, 110])
def test_the_faint_bits_of_a_digit_stay_with_it(glyphs, height):
    """Test digit 5735, a 5 whose top bar is a faint, thin flick: the ink threshold breaks it off into
    specks too small to be parts. They are still the 5's ink (the single-digit path keeps them too);
    without them the 5 read as a 3."""
    five = glyphs(5735, height)
    found = segment(page([glyphs(2, height), five, glyphs(3, height)], gaps=[30, 30]))
    assert len(found) == 3
    assert np.corrcoef(found[1][1].ravel(), to_mnist(five).ravel())[0, 1] > 0.95
