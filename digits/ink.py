"""Where the ink is: a grayscale page -> ink strength (0 = paper), its connected components, and block maxima.

ink_map finds the ink whichever way it goes (dark on light or light on dark), flattens the paper to 0
under uneven light (a fitted surface, not a local filter that would eat thick strokes) and stretches the
ink to 1. components labels the 8-connected blobs with numpy alone (runs of ink per row joined across
rows by a vectorised union-find). Settings: conf/image.toml [normalise] and [segment].
"""
import numpy as np
from PIL import Image

from digits.settings import NORMALISE, SEGMENT


def median(values: np.ndarray) -> float:
    """The exact upper median (element size // 2 in sorted order); this runs on every request.

    A page is mostly one paper value, and np.partition crawls over such runs of equal values (6 ms on
    a 200k-pixel page). So first guess from a strided sample, and check the guess exactly with two
    counts: it is the answer when fewer than k+1 values lie below it and at least k+1 at or below it."""
    flat = values.ravel()
    k = flat.size // 2
    if flat.size > 4096:
        sample = flat[::flat.size // 2048]
        guess = sample[np.argpartition(sample, sample.size // 2)[sample.size // 2]]
        below = np.count_nonzero(flat < guess)
        if below <= k < below + np.count_nonzero(flat == guess):
            return float(guess)
    return float(np.partition(flat, k)[k])


def background_surface(ink: np.ndarray) -> np.ndarray:
    """The paper's own level under a lamp: a smooth quadratic surface fitted to the background only.

    Fitted on a thumbnail at most surface_px a side; each round drops the pixels well above the surface
    (ink) and fits again. Smooth lighting gradients and shadows follow a low-order surface, strokes do not, so the
    strokes survive the subtraction whatever their thickness (a local filter would eat thick ones)."""
    h, w = ink.shape
    scale = min(1.0, NORMALISE.surface_px / max(h, w))
    small = ink if scale == 1.0 else np.asarray(
        Image.fromarray(ink).resize((max(2, round(w * scale)), max(2, round(h * scale))), Image.BOX))
    sy, sx = small.shape
    y, x = np.mgrid[0:sy, 0:sx]
    y, x = (y + 0.5) / sy - 0.5, (x + 0.5) / sx - 0.5
    terms = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1).reshape(-1, 6).astype(np.float32)
    values, keep = small.ravel(), np.ones(small.size, bool)
    for _ in range(NORMALISE.surface_rounds):
        chosen = terms[keep]  # least squares through the 6x6 normal equations: a tenth of lstsq's cost
        coefficients = np.linalg.solve(chosen.T @ chosen + 1e-6 * np.eye(6, dtype=np.float32),
                                       chosen.T @ values[keep])
        residual = values - terms @ coefficients
        spread = 1.4826 * median(np.abs(residual[keep] - median(residual[keep]))) + 0.01
        keep = residual < NORMALISE.surface_ink_spread * spread  # ink is brighter than the paper in this polarity
        if keep.sum() < 12:
            break
    gy, gx = ((np.arange(h, dtype=np.float32) + 0.5) / h - 0.5), ((np.arange(w, dtype=np.float32) + 0.5) / w - 0.5)
    c = coefficients.astype(np.float32)
    return (c[0] + c[2] * gy[:, None] + c[5] * (gy * gy)[:, None]
            + gx[None, :] * (c[1] + c[4] * gy[:, None]) + c[3] * (gx * gx)[None, :])


def ink_map(gray: np.ndarray):
    """Grayscale [H, W] in [0, 1] -> ink strength [H, W] in [0, 1] (0 = background), or None if blank."""
    # Ink polarity: the background is what the border mostly is, and the ink is whichever way from it
    # reaches further. (Not "the paper is lighter than mid-grey": paper photographed in dim light is
    # darker than that, and the pen darker still.)
    sides = [gray[0], gray[-1], gray[:, 0], gray[:, -1]]
    background = median(np.concatenate(sides))
    dark_ink = background - float(gray.min()) > float(gray.max()) - background
    ink = 1.0 - gray if dark_ink else gray.copy()
    # Flatten the background to 0 and stretch the ink to 1. Evenly lit (the four edges agree: scans,
    # canvases, MNIST itself): one level, cheap. Otherwise (a lamp, a shadow): a fitted surface.
    levels = [median(side) for side in sides]
    ink -= median(ink) if max(levels) - min(levels) < NORMALISE.even_light else background_surface(ink)
    peak = float(ink.max())
    if peak < NORMALISE.blank_peak:
        return None
    ink *= 1.0 / peak
    ink[ink < NORMALISE.ink_cutoff] = 0
    return ink if ink.any() else None


class Part:
    """Pixels of one digit candidate: a box [x0, x1) x [y0, y1) on the page and a mask inside it."""

    def __init__(self, x0, y0, mask, ink, cut_from=frozenset()):
        self.cut_from = cut_from  # the components this part was cut out of: never glued back to them
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        self.mask = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        self.x0, self.y0 = x0 + int(cols[0]), y0 + int(rows[0])
        self.h, self.w = self.mask.shape
        self.x1, self.y1 = self.x0 + self.w, self.y0 + self.h
        self.ink = np.where(self.mask, ink[self.y0:self.y1, self.x0:self.x1], 0).astype(np.float32)
        self.mass = float(self.ink.sum())

    @property
    def box(self):
        return [self.x0, self.y0, self.w, self.h]

    def union(self, other, ink):
        x0, y0 = min(self.x0, other.x0), min(self.y0, other.y0)
        mask = np.zeros((max(self.y1, other.y1) - y0, max(self.x1, other.x1) - x0), bool)
        for p in (self, other):
            mask[p.y0 - y0:p.y1 - y0, p.x0 - x0:p.x1 - x0] |= p.mask
        return Part(x0, y0, mask, ink, self.cut_from | other.cut_from)


def components(ink, min_share):
    """8-connected components of ink > 0 with at least min_share of the largest one's ink, as Parts."""
    h, w = ink.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = ink > 0
    step = np.diff(padded, axis=1)
    row, start = np.nonzero(step == 1)  # runs of ink [start, end) in each row, in row-major order
    end = np.nonzero(step == -1)[1]
    # Runs in the next row that touch a run (8-connectivity: columns overlap or meet at a corner) form a
    # contiguous range of the row-major list: find it by binary search on row * (w + 2) + column.
    key = row * (w + 2)
    first = np.searchsorted(key + end, key + (w + 2) + start, "left")
    last = np.searchsorted(key + start, key + (w + 2) + end, "right")
    count = np.maximum(last - first, 0)
    a = np.repeat(np.arange(len(row)), count)
    b = np.repeat(first - np.cumsum(count) + count, count) + np.arange(count.sum())
    # Union-find, vectorised: hook each edge's larger root under its smaller one, then jump pointers
    # until every run points at its root; a few rounds whatever the shape.
    root = np.arange(len(row))
    while not np.array_equal(root[a], root[b]):
        ra, rb = root[a], root[b]
        np.minimum.at(root, np.maximum(ra, rb), np.minimum(ra, rb))
        while not np.array_equal(root[root], root):
            root = root[root]
    label = np.unique(root, return_inverse=True)[1]
    length = end - start
    pixels = np.repeat(row * w + start - np.cumsum(length) + length, length) + np.arange(length.sum())
    mass = np.bincount(np.repeat(label, length), ink.ravel()[pixels])
    kept = np.flatnonzero(mass >= min_share * mass.max())
    kept = kept[np.argsort(-mass[kept])[:SEGMENT.max_parts]]
    order = np.argsort(label, kind="stable")
    bounds = np.searchsorted(label[order], np.arange(len(mass) + 1))
    parts = []
    for k in kept:  # paint each kept component's runs into a mask of its own box
        runs = order[bounds[k]:bounds[k + 1]]
        r, s, e = row[runs], start[runs], end[runs]
        y0, x0 = int(r.min()), int(s.min())
        mask = np.zeros((int(r.max()) + 1 - y0, int(e.max()) - x0), bool)
        n = e - s
        mask.ravel()[np.repeat((r - y0) * mask.shape[1] + s - x0 - np.cumsum(n) + n, n) + np.arange(n.sum())] = True
        parts.append(Part(x0, y0, mask, ink))
    return parts


def block_max(image: np.ndarray, factor: int) -> np.ndarray:
    """[H, W] -> [ceil(H / factor), ceil(W / factor)]: the maximum of each factor x factor block."""
    h, w = image.shape
    padded = np.zeros((-(-h // factor) * factor, -(-w // factor) * factor), image.dtype)
    padded[:h, :w] = image
    # factor^2 elementwise maxima of strided views: numpy's max over the short axes of a reshaped view
    # is ~12x slower (it was most of the cost of normalising a page).
    out = padded[::factor, ::factor].copy()
    for dy in range(factor):
        for dx in range(factor):
            np.maximum(out, padded[dy::factor, dx::factor], out=out)
    return out
