"""A written number -> the reader's line image, and the reader's frames -> digits with boxes.

The reader (issue 30: a segmentation-free model trained on whole strings, pipeline/reader.py) sees a
written number the way the digit model sees a digit, made the same way: the ink found on the page
(digits.ink, printed lines painted out), specks wiped, the whole line's ink cropped, scaled so that the
line is 20 px tall (MNIST's box) in a 28 px high strip, its strokes brought to MNIST's width. Its width
follows the line: 4 px of margin each side, rounded up to a multiple of STRIDE, at most MAX_WIDTH (a
longer line is shrunk to fit). White ink on black, values in [0, 1].

The reader answers one frame per STRIDE columns: [T, 12] probabilities, 0-9 the digits, NOT_A_DIGIT (10)
ink that is no digit, BLANK (11) the CTC blank. `decode` reads them greedily (best class per frame,
repeats merged, blanks dropped); each digit's probabilities are its surest frame's without the blank,
and its box is the ink between the midpoints to its neighbours' frames, mapped back to the page.
Numpy and Pillow only: training and the server share it.
"""
from dataclasses import dataclass

import numpy as np
from PIL import Image

from digits.ink import ink_map
from digits.normalise import even_strokes, without_specks
from digits.segment import reduced
from digits.settings import NORMALISE

HEIGHT = 28  # px: the strip the reader takes ...
BOX = 20  # ... with the line's ink this tall in it, as MNIST fits a digit into 20x20
PAD = 4  # px of black each side
STRIDE = 2  # columns per output frame (the reader's trunk pools by 4 along x, and is slid twice 2 px apart)
MAX_WIDTH = 512  # px: a longer line is shrunk to fit (about 16 digits written apart)
CLASSES = 12  # per frame: ten digits, NOT_A_DIGIT, BLANK
NOT_A_DIGIT, BLANK = 10, 11
INPUT = f"float32 [N,{HEIGHT},W,1] in [0,1], white ink on black, W a multiple of {STRIDE}"
OUTPUT = f"float32 [N,W/{STRIDE},{CLASSES}] softmax: 0-9 digits, {NOT_A_DIGIT} not a digit, {BLANK} CTC blank"


@dataclass
class Line:
    """The strip and how to map its columns and rows back to the uploaded page."""
    image: np.ndarray  # float32 [HEIGHT, W], W a multiple of STRIDE
    x0: float  # the page position of the strip's (PAD, top) pixel ...
    y0: float
    top: int  # ... where `top` is the first row holding the line
    scale: float  # page px per strip px

    def box(self, c0: int, c1: int) -> list:
        """The ink in strip columns [c0, c1) -> its box [x, y, w, h] on the page (whole px); with no ink
        there, those columns across the line's height."""
        part = self.image[:, c0:c1]
        rows, cols = np.flatnonzero(part.max(axis=1) > 0), np.flatnonzero(part.max(axis=0) > 0)
        if not len(rows):
            rows, cols = np.flatnonzero(self.image.max(axis=1) > 0), np.arange(max(c1 - c0, 1))
        left, right = (c0 + cols[0] - PAD) * self.scale, (c0 + cols[-1] + 1 - PAD) * self.scale
        top, bottom = (rows[0] - self.top) * self.scale, (rows[-1] + 1 - self.top) * self.scale
        return [int(self.x0 + left), int(self.y0 + top), max(1, round(right - left)), max(1, round(bottom - top))]


def line(gray: np.ndarray) -> Line | None:
    """Grayscale page [H, W] in [0, 1] -> its written line as the reader's strip; None for a blank page."""
    gray, factor = reduced(gray)  # a big page needs far fewer pixels for one line of writing
    ink = ink_map(gray)
    if ink is None:
        return None
    return strip(without_specks(ink), factor)


def strip(ink: np.ndarray, factor: int = 1) -> Line | None:
    """Ink [H, W] (0 = paper) -> the strip: cropped to the ink, scaled to BOX px tall (shrunk further when
    that would be wider than MAX_WIDTH), strokes evened on the 4x work image as digits.normalise does."""
    rows, cols = np.flatnonzero(ink.max(axis=1)), np.flatnonzero(ink.max(axis=0))
    if not len(rows):
        return None
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    work_box = NORMALISE.work_box  # the strokes are evened 4x larger (conf/image.toml), then box-reduced
    reduce = work_box // BOX
    scale = min(work_box / crop.shape[0], (MAX_WIDTH - 2 * PAD) * reduce / crop.shape[1])
    size = (max(reduce, round(crop.shape[1] * scale)), max(reduce, round(crop.shape[0] * scale)))
    work = even_strokes(Image.fromarray((crop * 255).astype(np.uint8)).resize(size, Image.LANCZOS))
    small = np.asarray(work.resize((max(1, round(work.width / reduce)), max(1, round(work.height / reduce))),
                                   Image.BOX), np.float32) / 255.0
    width = min(MAX_WIDTH, -(-(small.shape[1] + 2 * PAD) // STRIDE) * STRIDE)
    image = np.zeros((HEIGHT, width), np.float32)
    top = (HEIGHT - small.shape[0]) // 2
    image[top:top + small.shape[0], PAD:PAD + small.shape[1]] = small[:, :width - PAD]
    page_per_px = factor * reduce / scale
    return Line(image, float(cols[0] * factor), float(rows[0] * factor), top, page_per_px)


def batch(images) -> np.ndarray:
    """Strips of different widths -> float32 [N, HEIGHT, W, 1], padded with black to the widest."""
    width = max(image.shape[1] for image in images)
    out = np.zeros((len(images), HEIGHT, width, 1), np.float32)
    for k, image in enumerate(images):
        out[k, :, :image.shape[1], 0] = image
    return out


def decode(frames: np.ndarray, strip_width: int | None = None, image: np.ndarray | None = None):
    """One strip's frames [T, 12] -> [(class, probabilities [11], (column from, column to))], left to right:
    greedy CTC (best class per frame, repeats merged, blanks dropped). A token's probabilities are those of
    its surest frame without the blank (ten digits and not-a-digit, summing to 1). strip_width: the strip's
    own width (frames past it are a batch's padding). Its columns: with the strip's `image`, the strip cut at
    the faintest column between each two neighbouring tokens (`spans`); without it, at the midpoints."""
    if strip_width is not None:
        frames = frames[:max(1, strip_width // STRIDE)]
    best = frames.argmax(axis=1)
    tokens = []  # [class, first frame, last frame]
    for t, c in enumerate(best):
        if c == BLANK:
            continue
        if tokens and tokens[-1][0] == c and tokens[-1][2] == t - 1:
            tokens[-1][2] = t
        else:
            tokens.append([int(c), t, t])
    centres = [(first + last + 1) / 2 * STRIDE for _, first, last in tokens]
    if image is not None:
        columns = spans(centres, image)
    else:
        middles = [round((a + b) / 2) for a, b in zip(centres, centres[1:])]
        columns = list(zip([0] + middles, middles + [len(frames) * STRIDE]))
    out = []
    for (c, first, last), span in zip(tokens, columns):
        peak = frames[first + int(frames[first:last + 1, c].argmax())][:BLANK]
        out.append((c, peak / max(float(peak.sum()), 1e-12), span))
    return out


def spans(centres, image):
    """Each token's columns (see decode): the strip cut at the faintest column between each two neighbouring
    tokens' frames. Where CTC puts a token's frames in its digit (early, late or in the middle, as each
    model learns) does not matter: between two neighbours' frames lies the space or the touching point
    between their digits, and that is where the ink is faintest: past the first ink after the left token's
    frames (a token that fires before its digit's ink starts keeps its digit), and of equally faint
    columns, the one nearest mid-way."""
    profile = image.sum(axis=0)
    cuts = []
    for a, b in zip(centres, centres[1:]):
        a, b = int(a), int(b)
        if b <= a + 1:
            cuts.append(round((a + b) / 2))
            continue
        inked = np.flatnonzero(profile[a + 1:b] > 0)
        start = a + 2 + int(inked[0]) if len(inked) else a + 1  # after some ink of the left one: not its margin
        between = profile[start:b]
        if not len(between):
            cuts.append(round((a + b) / 2))
            continue
        faintest = np.flatnonzero(between <= between.min() + 1e-6) + start
        cuts.append(int(faintest[np.argmin(np.abs(faintest - (a + b) / 2))]))  # of equals, the one mid-way
    return list(zip([0] + cuts, cuts + [image.shape[1]]))


def greedy_text(frames: np.ndarray, strip_width: int | None = None) -> str:
    """The frames' reading as text: digits, and "?" for ink that is no digit (training's metric)."""
    return "".join("?" if c == NOT_A_DIGIT else str(c) for c, _, _ in decode(frames, strip_width))
