"""The robustness suite's renderings (testkit/uploads.py): each writes the file it claims (format, mode,
EXIF), the same ones for the same seed, and digits/decode.py decodes them."""
import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from digits.decode import decode
from testkit import uploads as rb

# condition -> (Pillow format, mode as Pillow opens it)
EXPECTED = {
    "paper_jpeg": ("JPEG", "L"), "phone_photo": ("JPEG", "RGB"), "rgba_canvas": ("PNG", "RGBA"),
    "thick_pen": ("PNG", "RGB"), "thin_pen": ("PNG", "RGB"), "exif_rotated": ("JPEG", "RGB"),
    "png16": ("PNG", "I;16"), "palette_png": ("PNG", "P"), "gray_alpha_png": ("PNG", "LA"),
    "rgba_png": ("PNG", "RGBA"), "cmyk_jpeg": ("JPEG", "CMYK"), "progressive_jpeg": ("JPEG", "RGB"),
    "gif": ("GIF", "P"), "bmp": ("BMP", "RGB"), "tiff": ("TIFF", "RGB"), "webp": ("WEBP", "RGB"),
    "ruled_paper": ("JPEG", "RGB"), "squared_paper": ("JPEG", "RGB"), "form_box": ("JPEG", "RGB"),
    "pencil": ("PNG", "L"), "coloured_ink": ("JPEG", "RGB"), "low_res": ("PNG", "RGB"),
    "photo_12mp": ("JPEG", "RGB"), "mnist_png": ("PNG", "L"),
}
# Renderings that write one of two formats, chosen at random: the other one.
EITHER = {"pencil": ("JPEG", "RGB"), "low_res": ("JPEG", "RGB")}


def opened(data):
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_every_condition_has_an_expectation():
    assert set(EXPECTED) == set(rb.CONDITIONS)


# 16-bit PNGs used to decode as a blank white page (Pillow's convert("L") clips I;16 at 255): this
# suite found it; "shows something" below is the regression check.
@pytest.mark.parametrize("name", sorted(rb.CONDITIONS))
def test_digit_generators_write_the_intended_format_and_mode(name, digits):
    for seed, digit in enumerate(digits[0][::6]):
        data = rb.CONDITIONS[name](digit, np.random.default_rng(seed))
        image = opened(data)
        assert (image.format, image.mode) in (EXPECTED[name], EITHER.get(name))
        gray = decode(data)
        assert gray.ndim == 2 and 0 <= gray.min() < gray.max() <= 1  # decodes, and shows something


def test_format_details_are_real(digits):
    digit, rng = digits[0][0], np.random.default_rng(0)
    assert np.asarray(opened(rb.make_png16(digit, rng))).max() > 255  # really uses 16 bits
    canvas = np.asarray(opened(rb.make_rgba_canvas(digit, rng)))
    assert canvas[..., 3].min() == 0 and canvas[..., 3].max() > 200  # transparent background, opaque strokes
    assert opened(rb.make_progressive_jpeg(digit, rng)).info.get("progressive")
    assert opened(rb.make_cmyk_jpeg(digit, rng)).info.get("adobe") is not None
    for seed in range(6):  # paper of 100 to 1000 px, any aspect ratio
        width, height = opened(rb.make_paper_jpeg(digit, np.random.default_rng(seed))).size
        assert 100 <= width <= 1000 and 100 <= height <= 1000


def test_exif_rotation_restores_the_upright_drawing(digits):
    seen = set()
    for seed in range(12):
        data = rb.make_exif_rotated(digits[0][1], np.random.default_rng(seed))
        image = opened(data)
        orientation = image.getexif()[0x0112]
        seen.add(orientation)
        # Replay the generator's random choices to get the picture as it was drawn, upright.
        replay = np.random.default_rng(seed)
        assert int(replay.choice(list(rb.STORED_AS))) == orientation
        upright = np.asarray(rb.plain(digits[0][1], replay).convert("L"), np.float32)
        shown = np.asarray(ImageOps.exif_transpose(image).convert("L"), np.float32)
        assert shown.shape == upright.shape
        assert np.abs(shown - upright).mean() < 3  # the same picture, JPEG aside
    assert seen == {3, 6, 8}


def test_generation_is_deterministic(digits):
    x, y = digits
    for name in rb.ALL:
        assert rb.generate(name, 3, 7, x, y) == rb.generate(name, 3, 7, x, y)
    assert rb.generate("paper_jpeg", 3, 7, x, y) != rb.generate("paper_jpeg", 3, 8, x, y)


def test_numbers_and_non_digits_decode(digits):
    x, y = digits
    for data, label in rb.generate(rb.NUMBER, 5, 0, x, y):
        assert 2 <= len(label) <= 6 and label.isdigit()
        assert decode(data).ndim == 2
    for name in rb.NON_DIGITS:
        for data, label in rb.generate(name, 5, 0, x, y):
            assert label is None and decode(data).ndim == 2


def test_the_web_page_s_sample_photos_are_what_testkit_samples_writes(tmp_path):
    """serve/static/samples/ is committed; regenerating it gives the same files (python -m testkit.samples)."""
    from testkit import ROOT, samples

    index = samples.write(tmp_path)
    committed = ROOT / "serve" / "static" / "samples"
    assert (tmp_path / "index.json").read_text() == (committed / "index.json").read_text()
    for sample in index:
        assert (tmp_path / sample["file"]).read_bytes() == (committed / sample["file"]).read_bytes(), sample["file"]
