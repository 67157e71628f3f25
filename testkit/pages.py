"""What the robustness suite's renderings draw with (testkit/uploads.py, testkit/field.py): an MNIST
digit's ink at any size and pen width, a page with a digit on it, pen colours, blank paper, and the glyphs
a non-digit upload is made of."""
import numpy as np
from PIL import Image, ImageFilter


def ink_mask(digit, size, pen=0):
    """MNIST digit (white on black, uint8 28x28) -> ink coverage float [size, size] in [0, 1].

    pen > 0 thickens, pen < 0 thins the strokes. That is done at 4x resolution: at 28x28 one pixel of
    erosion wipes out MNIST's 2-3 px strokes, at 112x112 it takes off a quarter of a pixel per step."""
    big = Image.fromarray(digit).resize((112, 112), Image.BILINEAR)
    if pen > 0:
        big = big.filter(ImageFilter.MaxFilter(2 * pen + 1))
    elif pen < 0:
        big = big.filter(ImageFilter.MinFilter(-2 * pen + 1))
    return np.asarray(big.resize((size, size), Image.BILINEAR), np.float32) / 255.0


def on_paper(digit, rng, canvas=(100, 1000), share=(0.2, 0.9), pen=0, paper=(255, 255, 255), ink=(0, 0, 0)):
    """A digit drawn with `ink` on `paper` at a random size and place: uint8 RGB [H, W, 3].
    `share` is the digit box's size as a share of the canvas's shorter side."""
    w, h = (int(v) for v in rng.integers(canvas[0], canvas[1] + 1, size=2))
    size = max(28, int(min(w, h) * rng.uniform(*share)))
    mask = ink_mask(digit, size, pen)[..., None]
    page = np.empty((h, w, 3), np.float32)
    page[:] = paper
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    region = page[top:top + size, left:left + size]
    region[:] = region * (1 - mask) + np.asarray(ink, np.float32) * mask
    return np.clip(page, 0, 255).round().astype(np.uint8)


def pen_colour(rng):
    """Mostly black or blue ballpoint, sometimes red or green: all dark next to paper."""
    colours = [(15, 15, 15), (25, 35, 140), (150, 20, 25), (20, 90, 40)]
    return colours[rng.choice(len(colours), p=[0.55, 0.3, 0.1, 0.05])]


def plain(digit, rng, **kw):
    """The everyday upload that format conditions start from: pen on white-ish paper, 100-600 px."""
    paper = tuple(int(v) for v in np.clip(rng.uniform(228, 255) + rng.uniform(-6, 6, size=3), 0, 255))  # off-white
    return Image.fromarray(on_paper(digit, rng, canvas=(100, 600), paper=paper, ink=pen_colour(rng), **kw))


def canvas(rng, low=100, high=800):
    w, h = (int(v) for v in rng.integers(low, high + 1, size=2))
    paper = np.clip(rng.uniform(215, 255) + rng.uniform(-8, 8, size=3), 0, 255)
    return Image.new("RGB", (w, h), tuple(int(v) for v in paper))


# Letters and symbols people might draw or photograph by mistake. Left out: shapes that *are* digits in
# many hands (O o I l i S s Z z G g q b).
GLYPHS = "ABCEFHKMNPRTUVWXYaehkmnrtuvwxy#?&@%$*+=!"
