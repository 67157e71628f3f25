"""Printed structure on the page: notebook rules, a maths grid, a form's box. Found and removed, the ink the
writer put over them kept.

Printed lines are thin, long, straight and regular; strokes are not. On the ink map (digits/ink.py, before
it is stretched), in the page's own frame (a photo's tilt found from the projections and undone):
- a *full line* is a band of rows (columns) at most `max_width` thick in which long runs of ink cover
  `full_share` of the page: a rule, a grid line, a margin, a comb field's top and bottom;
- a *box side* is a thin straight segment at least `side_share` of the page long whose two ends meet
  lines across it: a form box's four sides, a comb's dividers. A 1 or a 7 is straight too, but its ends
  meet nothing, so it stays.
Each line's pixels are then painted over with the ink just above and below it (left and right of it for a
vertical one), the weaker of the two: a stroke that crosses the line continues through it, the line
itself goes. Settings: conf/image.toml [lines].
"""
import math

import numpy as np
from PIL import Image

from digits.blobs import block_max, row_runs
from digits.settings import LINES


def closed(mask: np.ndarray, reach: int) -> np.ndarray:
    """Gaps of up to 2 * reach px along each row bridged (a 1-D closing): a faint line in a JPEG comes out
    of the threshold dashed."""
    if reach < 1:
        return mask
    grown = mask.copy()
    for k in range(1, reach + 1):
        grown[:, k:] |= mask[:, :-k]
        grown[:, :-k] |= mask[:, k:]
    out = grown.copy()
    for k in range(1, reach + 1):
        out[:, k:] &= grown[:, :-k]
        out[:, :-k] &= grown[:, k:]
    return out


def long_runs(runs, shape, min_run: int) -> np.ndarray:
    """The pixels of an [H, W] mask that lie in one of its row runs (blobs.row_runs) of at least min_run
    pixels."""
    row, start, end = runs
    h, w = shape
    keep = end - start >= min_run
    out = np.zeros(h * (w + 1) + 1, np.int32)
    np.add.at(out, row[keep] * (w + 1) + start[keep], 1)
    np.add.at(out, row[keep] * (w + 1) + end[keep], -1)
    return np.cumsum(out)[:-1].reshape(h, w + 1)[:, :w] > 0


def line_width(shape) -> float:
    """The thickest a printed line is taken to be on a page of this shape, px."""
    return max(LINES.max_width_px, LINES.max_width_share * min(shape))


def projections(ys, xs, h, w, angle):
    """Row and column histograms of the ink pixels (ys, xs) of an h x w page sheared by `angle` degrees:
    a line tilted by that angle falls into one row (column) bin."""
    t = math.tan(math.radians(angle))
    rows = np.bincount(np.round(ys - xs * t + w * abs(t)).astype(np.int64))
    cols = np.bincount(np.round(xs + ys * t + h * abs(t)).astype(np.int64))
    return rows, cols


def skew(mask: np.ndarray, angles, near: int) -> float:
    """The page's tilt in degrees among `angles`: the shear under which the rows and columns of ink hold
    the most prominent thin peaks (each bin over the larger of the bins `near` away, squared and summed:
    a line's projection is a narrow peak, a digit's a broad hump that must not steer the angle). The
    smallest tilt among equals."""
    ys, xs = np.nonzero(mask)
    if len(ys) > LINES.skew_pixels:  # a sample is plenty for a projection
        pick = np.random.default_rng(0).choice(len(ys), LINES.skew_pixels, replace=False)
        ys, xs = ys[pick], xs[pick]
    best, best_score = 0.0, -1.0
    for angle in sorted(angles, key=abs):
        score = sum(float(p @ p) for p in map(lambda h: prominence(h, near), projections(ys, xs, *mask.shape, angle)))
        if score > best_score * (1 + 1e-6):
            best, best_score = float(angle), score
    return best


def prominence(histogram: np.ndarray, near: int) -> np.ndarray:
    """Each bin's height over the larger of the bins `near` away on either side (0 where it is not over)."""
    padded = np.pad(histogram.astype(np.float64), near)
    return np.maximum(padded[near:-near] - np.maximum(padded[:-2 * near], padded[2 * near:]), 0)


def sharp_peak(histogram: np.ndarray, height: float, near: int) -> bool:
    """Whether some bin holds at least `height` and twice what the bins `near` away either side hold: a
    thin line's projection, not a digit's broad hump."""
    return bool((prominence(histogram, near) >= np.maximum(height, histogram / 2)).any())


def tilt(mask: np.ndarray):
    """(tilt in degrees, whether the page may hold printed lines), from the mask reduced to <= skew_grid
    px: a line, level or tilted by up to max_skew_deg, fills `candidate_share` of a row (column) of the
    sheared projection in a sharp peak; a digit on plain paper makes a broad hump at most. Then refined at
    full size."""
    factor = max(1, math.ceil(max(mask.shape) / LINES.skew_grid))
    small = block_max(mask, factor) if factor > 1 else mask
    h, w = small.shape
    width = line_width(mask.shape)
    near = max(2, math.ceil(width / factor) + 1)
    coarse = skew(small, np.arange(-LINES.max_skew_deg, LINES.max_skew_deg + 1e-9, LINES.skew_step_deg), near)
    ys, xs = np.nonzero(small)
    rows, cols = projections(ys, xs, h, w, coarse)
    if not (sharp_peak(rows, LINES.candidate_share * w, near) or sharp_peak(cols, LINES.candidate_share * h, near)):
        return 0.0, False
    step = LINES.skew_step_deg / 4
    return skew(mask, coarse + step * np.arange(-4, 5), math.ceil(width) + 1), True


def bands(lines: np.ndarray, mask: np.ndarray, full, max_width: int):
    """Row bands of a long-run mask whose rows each hold at least `full` line pixels (a number, or one per
    row), at most max_width rows thick, with paper just above and below along most of their length
    (`clear_share` of the columns they cover, two rows out): [(first row, last row + 1)]. A band grows by
    the rows beside it that hold `edge_share` of what `full` asks, while it stays that thin and clear: the
    same line, not quite level once the tilt is undone, staircased across a few rows. A thick stroke that
    crosses a tight crop (a 7's bar) has ink above and below its fullest rows; a printed line has it only
    where a stroke crosses."""
    counts = lines.sum(axis=1)
    edge = counts >= np.asarray(full) * (LINES.edge_share / LINES.full_share)
    rows = np.flatnonzero(counts >= full)
    h = mask.shape[0]
    found = []
    # Rows one apart are one band: a double margin line, or a line a JPEG split.
    for run in np.split(rows, np.flatnonzero(np.diff(rows) > 2) + 1) if len(rows) else []:
        y0, y1 = int(run[0]), int(run[-1]) + 1
        if y1 - y0 > max_width:
            continue
        wide0, wide1 = y0, y1
        while wide0 > 0 and edge[wide0 - 1] and wide1 - wide0 < max_width:
            wide0 -= 1
        while wide1 < h and edge[wide1] and wide1 - wide0 < max_width:
            wide1 += 1
        for b0, b1 in ((wide0, wide1), (y0, y1)) if (wide0, wide1) != (y0, y1) else ((y0, y1),):
            if clear(lines, mask, b0, b1):
                found.append((b0, b1))
                break
    return found


def clear(lines: np.ndarray, mask: np.ndarray, y0: int, y1: int) -> bool:
    """Whether the rows two out from the band y0..y1-1 are paper along `clear_share` of the columns its
    long runs cover."""
    covered = lines[y0:y1].any(axis=0)
    above = mask[y0 - 2] if y0 >= 2 else np.zeros_like(covered)
    below = mask[y1 + 1] if y1 + 1 < mask.shape[0] else np.zeros_like(covered)
    return bool((~above & ~below)[covered].mean() >= LINES.clear_share)


def segments(runs, taken: np.ndarray, min_length: int, max_width: int):
    """Thin straight horizontal segments at least min_length long, outside the rows already taken by full
    lines: [(x0, x1, y0, y1)]. Each row's longest run (gaps bridged) is a candidate; consecutive rows whose
    runs overlap form a group, and a segment is the group's rows whose runs are at least `core_share` of
    its longest: a digit that touches a box's side joins the group with its shorter runs and stays out of
    the segment. `runs`: blobs.row_runs of the mask, gaps bridged."""
    row, start, end = runs
    length = end - start
    keep = (length >= min_length) & ~taken[row]
    row, start, end, length = row[keep], start[keep], end[keep], length[keep]
    if not len(row):
        return []
    order = np.lexsort((-length, row))  # by row, longest first
    row, start, end, length = row[order], start[order], end[order], length[order]
    first = np.r_[True, row[1:] != row[:-1]]
    row, start, end, length = row[first], start[first], end[first], length[first]
    found = []
    breaks = np.flatnonzero((np.diff(row) != 1) | (start[1:] >= end[:-1]) | (end[1:] <= start[:-1])) + 1
    for group in np.split(np.arange(len(row)), breaks):
        core = group[length[group] >= LINES.core_share * length[group].max()]
        y0, y1 = int(row[core].min()), int(row[core].max()) + 1
        x0, x1 = int(np.median(start[core])), int(np.median(end[core]))
        if y1 - y0 <= max_width and y1 - y0 <= LINES.max_aspect * (x1 - x0):
            found.append((x0, x1, y0, y1))
    return found


def meets(end, y, others, reach):
    """Whether the point (end, y) of a horizontal segment lies on one of the vertical lines `others`
    ((x0, x1, y0, y1) in the same frame), within reach px."""
    return any(x0 - reach <= end <= x1 + reach and y0 - reach <= y <= y1 + reach for x0, x1, y0, y1 in others)


def paint_over(ink: np.ndarray, y0: int, y1: int, x0: int, x1: int, peak: float) -> None:
    """Rows y0..y1-1 (grown by one each way: the line's anti-aliased edge) of columns x0..x1-1 painted
    with the weaker of the ink just above and just below, each the strongest within a pixel sideways: a
    stroke that crosses the line continues through it, the line goes. Where the line is clearly lighter
    than the pen (a blue rule under a black pen), the pen's own pixels on it stay too: a stroke that runs
    along the line is kept."""
    h, w = ink.shape
    top, bottom = max(y0 - 1, 0), min(y1 + 1, h)
    above = ink[top - 1] if top > 0 else np.zeros(w, ink.dtype)
    below = ink[bottom] if bottom < h else np.zeros(w, ink.dtype)
    fill = np.minimum(widen(above), widen(below))[x0:x1]
    band = ink[top:bottom, x0:x1]
    level = float(np.median(ink[y0:y1, x0:x1].max(axis=0)))  # the line's own ink: most of its length is line
    if level < LINES.lighter_line * peak:
        ink[top:bottom, x0:x1] = np.where(band > (level + peak) / 2, band, fill[None, :])
    else:
        ink[top:bottom, x0:x1] = fill[None, :]


def widen(row: np.ndarray) -> np.ndarray:
    out = row.copy()
    np.maximum(out[1:], row[:-1], out=out[1:])
    np.maximum(out[:-1], row[1:], out=out[:-1])
    return out


def find(mask: np.ndarray, page=None):
    """The printed lines of a binary ink mask, in its frame: (horizontal, vertical), each [(x0, x1, y0, y1)]
    (for vertical ones x and y as in the transposed mask). page: where the upload itself lies in this
    frame (a levelled photo's corners are outside it), None for all of it."""
    max_width = round(line_width(mask.shape))
    found = []
    for m, inside in ((mask, page), (mask.T, None if page is None else page.T)):  # rows, then columns
        rows, cols = m.shape
        runs = row_runs(closed(m, LINES.gap_reach))  # a faint line comes out of the threshold dashed
        lines = long_runs(runs, m.shape, max(LINES.min_run_px, round(LINES.min_run_share * cols)))
        # A full line covers full_share of the page's own span in its row: on a tilted page, levelled,
        # the rule nearest an edge runs out of the photo part way along (kept, it framed the digit with a
        # bar). Never under full_share of half the width.
        span = np.full(rows, cols) if inside is None else np.maximum(inside.sum(axis=1), cols / 2)
        full = [(0, cols, y0, y1) for y0, y1 in bands(lines, m, np.round(LINES.full_share * span), max_width)]
        taken = np.zeros(rows, bool)
        for _, _, y0, y1 in full:
            taken[max(y0 - 1, 0):y1 + 1] = True
        found.append((full, segments(runs, taken, round(LINES.side_share * cols), max_width)))
    (h_full, h_seg), (v_full, v_seg) = found
    # A segment is a box side when both its ends meet lines across it (full ones or other segments).
    # Vertical lines in the horizontal frame: transpose their boxes back.
    reach = max(LINES.corner_px, max_width)
    v_all = [(y0, y1, x0, x1) for x0, x1, y0, y1 in v_full + v_seg]
    h_all = [(y0, y1, x0, x1) for x0, x1, y0, y1 in h_full + h_seg]
    sides_h = [s for s in h_seg if meets(s[0], (s[2] + s[3]) / 2, v_all, reach)
               and meets(s[1], (s[2] + s[3]) / 2, v_all, reach)]
    sides_v = [s for s in v_seg if meets(s[0], (s[2] + s[3]) / 2, h_all, reach)
               and meets(s[1], (s[2] + s[3]) / 2, h_all, reach)]
    return h_full + sides_h, v_full + sides_v


def remove_lines(ink: np.ndarray, peak: float) -> np.ndarray:
    """Ink map (unstretched, 0 = paper, `peak` its strongest ink) -> the same with printed lines painted
    out. Returns the input itself when the page has none."""
    mask = ink > LINES.ink_share * peak
    if min(mask.shape) < LINES.min_page_px or not mask.any():
        return ink
    estimate, maybe = tilt(mask)
    if not maybe:
        return ink
    # The projections put the tilt within a fraction of a degree; a long box side is straight only within
    # a pixel or two, so the neighbouring angles are tried too when the estimate finds nothing.
    as_float = mask.astype(np.float32)
    for angle in estimate + LINES.skew_step_deg * np.array([0, -0.5, 0.5, -1, 1]):
        angle = float(angle) if abs(angle) >= LINES.skew_step_deg / 8 else 0.0
        horizontal, vertical = (find(rotate(as_float, angle) > 0.5, rotate(np.ones_like(as_float), angle) > 0.5)
                                if angle else find(mask))
        if horizontal or vertical:
            break
    else:
        return ink
    out = rotate(ink, angle) if angle else ink.copy()
    for x0, x1, y0, y1 in horizontal:
        paint_over(out, y0, y1, x0, x1, peak)
    flipped = out.T  # a view: painting its rows paints out's columns
    for x0, x1, y0, y1 in vertical:
        paint_over(flipped, y0, y1, x0, x1, peak)
    return out


def rotate(image: np.ndarray, angle: float) -> np.ndarray:
    """A float image turned by `angle` degrees about its centre (the page levelled), paper (0) outside."""
    return np.array(Image.fromarray(image.astype(np.float32), "F").rotate(angle, Image.BILINEAR, fillcolor=0.0))
