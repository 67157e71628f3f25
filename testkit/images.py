"""Small encoded images to send: a PNG of an array, a digit on a white page."""
import io

import numpy as np
from PIL import Image


def encode(image, fmt, **options) -> bytes:
    """A Pillow image -> its bytes in `fmt` (PNG, JPEG, ...), with Pillow's save options."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_bytes(array, mode=None) -> bytes:
    """uint8 (or uint16) array -> PNG bytes, converted to `mode` first if given."""
    image = Image.fromarray(np.asarray(array))
    return encode(image.convert(mode) if mode else image, "PNG")


def on_paper(digit, size=160, box=70, at=(45, 40), fmt="PNG", resample=Image.BICUBIC):
    """An MNIST digit (white on black, uint8 28x28) written dark on a white page: size x size px, the digit
    scaled to box x box at `at`, encoded as fmt (a JPEG in RGB, as cameras write them), or the page
    itself when fmt is None."""
    page = Image.new("L", (size, size), 255)
    page.paste(Image.fromarray(255 - digit).resize((box, box), resample), at)
    if fmt is None:
        return page
    return encode(page.convert("RGB") if fmt == "JPEG" else page, fmt)
