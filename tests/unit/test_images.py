"""digits.decode and digits.normalise on real MNIST digits dressed up as real uploads."""
import numpy as np
import pytest
from PIL import Image

from digits.decode import ImageError, decode
from digits.blobs import block_max
from digits.normalise import even_strokes, filter3x3, normalise, stroke_width
from digits.settings import NORMALISE
from testkit.images import encode as encoded, on_paper as written


def on_paper(digit, canvas=300, at=(20, 180), size=60):
    """A real MNIST digit written dark on white paper, small, somewhere on a big page."""
    return written(digit, canvas, size, at, fmt=None, resample=Image.BILINEAR)


def similarity(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_an_mnist_digit_normalises_to_itself(digits):
    x = digits[0][0].astype(np.float32) / 255
    assert similarity(normalise(x), x) > 0.9


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"])
def test_a_small_dark_digit_in_the_corner_of_a_page_comes_out_mnist_style(digits, fmt):
    digit = digits[0][5]
    out = normalise(decode(encoded(on_paper(digit), fmt)))
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert out[0].max() == 0 and out[:, 0].max() == 0  # black background, white ink
    assert similarity(out, digit.astype(np.float32) / 255) > 0.8


def test_exif_orientation_is_applied(digits):
    digit = digits[0][7]
    upright = on_paper(digit, canvas=120, at=(30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": store the pixels rotated the other way
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    out = normalise(decode(encoded(stored, "JPEG", exif=exif.tobytes(), quality=95)))
    assert similarity(out, digit.astype(np.float32) / 255) > 0.8


def test_dark_strokes_on_a_transparent_canvas_are_ink(digits):
    digit = digits[0][9]
    rgba = np.zeros((28, 28, 4), np.uint8)  # black strokes, alpha = stroke coverage, like a canvas export
    rgba[..., 3] = digit
    out = normalise(decode(encoded(Image.fromarray(rgba, "RGBA").resize((280, 280)), "PNG")))
    assert similarity(out, digit.astype(np.float32) / 255) > 0.8


def test_a_blank_page_normalises_to_nothing():
    assert normalise(decode(encoded(Image.new("L", (200, 200), 240), "PNG"))).max() == 0


@pytest.mark.parametrize("data, code, status", [
    (b"", "empty", 400),
    (b"this is not an image at all", "not_an_image", 400),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "unsupported_type", 415),  # a format, just not ours
])
def test_bad_uploads_are_clear_errors(data, code, status):
    with pytest.raises(ImageError) as failure:
        decode(data)
    assert failure.value.code == code and failure.value.status == status


def test_a_truncated_png_is_a_clear_error(digits):
    data = encoded(on_paper(digits[0][0]), "PNG")
    with pytest.raises(ImageError) as failure:
        decode(data[: len(data) // 2])
    assert failure.value.code == "corrupt_image"


@pytest.mark.parametrize("index", range(0, 30, 3))  # one real test digit of each class
def test_a_phone_photo_under_a_lamp_comes_out_mnist_style(digits, index):
    """Grey paper, light falling off across the page, a shadowed corner, sensor noise, a JPEG: a single
    background level would call the dark side of the paper ink and crop to the shadow."""
    digit = digits[0][index]
    rng = np.random.default_rng(index)
    h, w = 600, 800
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    paper = 120 + 90 * (x / w) + 30 * (y / h) - 40 * np.exp(-((x / w) ** 2 + (y / h - 1) ** 2) * 8)  # lamp + shadow
    ink = np.asarray(Image.fromarray(digit).resize((180, 180), Image.BILINEAR), np.float32) / 255
    top, left = 200 + int(rng.integers(-40, 40)), 300 + int(rng.integers(-80, 80))
    paper[top:top + 180, left:left + 180] *= 1 - 0.65 * ink  # dark ink: a fraction of the light it sits in
    photo = np.clip(paper + rng.normal(0, 4, paper.shape), 0, 255).astype(np.uint8)
    rgb = Image.fromarray(photo).convert("RGB")
    out = normalise(decode(encoded(rgb, "JPEG", quality=85)))
    assert out[0].max() == 0 and out[:, 0].max() == 0
    assert similarity(out, normalise(digit.astype(np.float32) / 255)) > 0.8


@pytest.mark.parametrize("index", range(1, 30, 3))  # one real test digit of each class
def test_specks_far_from_the_digit_do_not_shrink_it_to_a_dot(digits, index):
    """A few 2x2 dark specks (sensor noise, dust) at the edges of the page: the crop is the digit's box,
    not the page's."""
    digit = digits[0][index]
    page = np.asarray(on_paper(digit, canvas=500, at=(200, 200), size=80)).copy()
    clean = normalise(decode(encoded(Image.fromarray(page), "PNG")))
    for y, x in [(3, 3), (3, 490), (490, 3), (490, 490), (250, 2), (2, 250)]:
        page[y:y + 2, x:x + 2] = 0
    specked = normalise(decode(encoded(Image.fromarray(page), "PNG")))
    assert similarity(specked, clean) > 0.99


@pytest.mark.parametrize("paper, ink", [(0.45, 0.05), (0.35, 0.0), (0.6, 0.2), (0.55, 0.95), (0.4, 0.9), (0.2, 0.7)])
def test_ink_is_found_on_mid_grey_paper_whichever_way_it_goes(digits, paper, ink):
    """Dark pen on paper photographed in dim light (the paper darker than mid-grey), chalk on a grey
    board: the polarity is where the ink goes from the paper, not which side of 0.5 the paper is."""
    digit = digits[0][7]
    coverage = np.zeros((240, 320), np.float32)
    coverage[60:172, 100:212] = np.asarray(Image.fromarray(digit).resize((112, 112), Image.BILINEAR), np.float32) / 255
    page = ((paper + (ink - paper) * coverage) * 255).round().astype(np.uint8)
    out = normalise(decode(encoded(Image.fromarray(page), "PNG")))
    assert similarity(out, normalise(digit.astype(np.float32) / 255)) > 0.9


@pytest.mark.parametrize("shape, factor", [((7, 5), 2), ((1003, 757), 3), ((40, 64), 8), ((9, 9), 1)])
def test_block_max_is_the_maximum_of_each_block(shape, factor):
    image = np.random.default_rng(factor).random(shape).astype(np.float32)
    padded = np.zeros((-(-shape[0] // factor) * factor, -(-shape[1] // factor) * factor), np.float32)
    padded[:shape[0], :shape[1]] = image
    expected = padded.reshape(padded.shape[0] // factor, factor, -1, factor).max(axis=(1, 3))
    assert np.array_equal(block_max(image, factor), expected)


@pytest.mark.parametrize("width", [4, 8, 14, 24])
def test_a_stroke_filling_its_crop_measures_its_own_width(width):
    """The crop is tight, so a 1's sides are the crop's sides: they must count as edge (PIL's filters
    repeat the border, which once made a sharp-edged 1 measure 25 px and get ground to a sliver)."""
    bar = Image.new("L", (width, 80), 255)
    assert stroke_width(bar) == pytest.approx(width, rel=0.25)


def test_a_sharp_edged_stroke_of_mnist_width_is_left_as_it_is():
    width = round(sum(NORMALISE.stroke_band) / 2)
    bar = Image.new("L", (width, 80), 255)
    assert np.array_equal(np.asarray(even_strokes(bar)), np.asarray(bar))


@pytest.mark.parametrize("pick, pil_filter", [(np.minimum, "MinFilter"), (np.maximum, "MaxFilter")])
def test_filter3x3_is_pils_rank_filter_with_background_outside(pick, pil_filter):
    """even_strokes runs on numpy for speed; it must give exactly what PIL's filter gives on the image
    framed in background (the normaliser's output, and so the uploads the model trained on, depend on it)."""
    from PIL import ImageFilter, ImageOps

    rng = np.random.default_rng(3)
    for shape in [(1, 1), (1, 7), (9, 1), (28, 28), (80, 37)]:
        image = (rng.random(shape) < 0.5) * rng.integers(0, 256, shape)
        framed = ImageOps.expand(Image.fromarray(image.astype(np.uint8)), 1, 0).filter(getattr(ImageFilter, pil_filter)(3))
        expected = np.asarray(framed)[1:-1, 1:-1]
        assert np.array_equal(filter3x3(image.astype(np.uint8), pick), expected), shape


def test_a_fat_marker_stroke_is_thinned_evenly_from_both_sides():
    fat = Image.new("L", (30, 80), 255)
    left, top, right, bottom = even_strokes(fat).getbbox()
    assert 0 < left == 30 - right and 0 < top == 80 - bottom  # the edge of the crop erodes like any other
