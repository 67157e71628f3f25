"""Blobs of ink: the 8-connected components of an ink map, each a Part (a box on the page and a mask),
labelled with numpy alone (runs of ink per row joined across rows by a vectorised union-find).
Settings: conf/image.toml [segment] (max_parts).
"""
import numpy as np

from digits.settings import SEGMENT


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


def row_runs(mask: np.ndarray):
    """The runs of True in each row of a boolean [H, W]: (row, start, end) arrays, each run [start, end),
    in row-major order."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)
    row, start = np.nonzero(step == 1)
    return row, start, np.nonzero(step == -1)[1]


def components(ink, min_share):
    """8-connected components of ink > 0 with at least min_share of the largest one's ink, as Parts."""
    h, w = ink.shape
    row, start, end = row_runs(ink > 0)  # runs of ink [start, end) in each row, in row-major order
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
