"""A written number -> its digits: connected components, broken strokes merged, touching digits cut.

1. Label the 8-connected components of the ink (runs of ink per row, joined across rows: numpy only).
2. Drop specks (dust, JPEG noise): under min_share of the largest component's ink.
3. Merge what belongs to one digit: pieces stacked over each other (a 5's floating bar, a stroke broken
   by a faint band) and small bits next to a digit. The line height, the scale for everything after,
   is the mass-weighted median of the component heights, so broken bits barely move it.
4. Cut touching digits: a part too wide for the ink it would have to cut through is split along the
   cheapest top-to-bottom path through it (dynamic programming over rows, so the cut can bend around
   strokes that overlap in x), recursively.
5. Let the model choose (read): the geometry above errs on the side of too many pieces (an open 0 is
   two arcs, a 4 drawn in two strokes, a flat 6 cut at its thin waist). Each run of up to three
   neighbouring pieces is a candidate digit; dynamic programming picks the grouping whose digits the
   model is surest of, with a small bonus per digit so that gluing two real digits into one blob has
   to earn it; no bonus where step 4 cut one blob, so a cut stands only if the model reads two digits
   there more surely than one. This is the over-segment-then-recognise idea of LeCun et al. 1998
   (section V). Each candidate is normalised with the ink around it that no other part claims
   (with_loose_ink): faint bits of its strokes that step 2 dropped as specks.
"""
import math

import numpy as np

from digits.blobs import Part, components
from digits.ink import ink_map
from digits.normalise import to_mnist
from digits.settings import SEGMENT


def read(gray: np.ndarray, classify, bonus=None, min_share=None):
    """Grayscale page -> [(box [x, y, w, h], 28x28 digit, its probabilities)], left to right, grouped by
    the model. classify: float32 [N, 28, 28, 1] -> [N, 10 or 11] calibrated probabilities (index 10: not
    a digit); each digit's probabilities are classify's own, so no caller needs to run it again."""
    bonus = SEGMENT.digit_bonus if bonus is None else bonus
    gray, factor = reduced(gray)
    found = candidates(gray, SEGMENT.min_share if min_share is None else min_share)
    if not found:
        return []
    parts, ink = found
    if len(parts) > SEGMENT.max_pieces:
        images = [to_mnist(p.ink) for p in parts]
        probabilities = classify(np.stack(images)[..., None])
        return [(scaled(p.box, factor), image, q) for p, image, q in zip(parts, images, probabilities)]
    # Every run parts[i:j] of up to max_group pieces, as one candidate digit.
    runs = [(i, j) for i in range(len(parts)) for j in range(i + 1, min(i + SEGMENT.max_group, len(parts)) + 1)]
    groups = {}
    for i, j in runs:
        group = parts[i]
        for part in parts[i + 1:j]:
            group = group.union(part, ink)
        groups[i, j] = group
    images = {run: to_mnist(with_loose_ink(group, parts[:run[0]] + parts[run[1]:], ink)) for run, group in groups.items()}
    probabilities = classify(np.stack([images[run] for run in runs])[..., None])
    probability = dict(zip(runs, probabilities))
    # A digit starting where the ink was apart earns the bonus; one starting at a cut through a blob
    # does not. When cuts earned it too, wide 0s, 4s and 6s and flat 2s cut in two were read as two
    # confident digits. Validation numbers, n = 600: 96.5% -> 97.8% exact, touching 64.7% -> 64.2%.
    def bonus_at(i):
        return 0.0 if i and parts[i - 1].cut_from & parts[i].cut_from else bonus

    score = {run: float(np.log(max(p[:10].max(), 1e-12))) + bonus_at(run[0]) for run, p in probability.items()}
    # best[j]: the best reading of parts[:j]; came[j]: where its last digit starts.
    best, came = [0.0] + [-np.inf] * len(parts), [0] * (len(parts) + 1)
    for j in range(1, len(parts) + 1):
        for i in range(max(0, j - SEGMENT.max_group), j):
            if best[i] + score[i, j] > best[j]:
                best[j], came[j] = best[i] + score[i, j], i
    chosen, j = [], len(parts)
    while j:
        chosen.append((came[j], j))
        j = came[j]
    return [(scaled(groups[run].box, factor), images[run], probability[run]) for run in reversed(chosen)]


def with_loose_ink(part, others, ink):
    """The ink in and around a part's box (margin: a share of its height) that no other part claims: its
    own strokes, and the faint bits of them that the ink threshold broke off into specks too small to be
    parts (a 0's faint side, a 5's thin bar)."""
    m = round(SEGMENT.loose_ink_margin * part.h)
    x0, y0 = max(part.x0 - m, 0), max(part.y0 - m, 0)
    x1, y1 = min(part.x1 + m, ink.shape[1]), min(part.y1 + m, ink.shape[0])
    own = ink[y0:y1, x0:x1].copy()
    for p in others:
        a0, b0, a1, b1 = max(p.x0, x0), max(p.y0, y0), min(p.x1, x1), min(p.y1, y1)
        if a0 < a1 and b0 < b1:
            own[b0 - y0:b1 - y0, a0 - x0:a1 - x0][p.mask[b0 - p.y0:b1 - p.y0, a0 - p.x0:a1 - p.x0]] = 0
    return own


def segment(gray: np.ndarray, min_share=None):
    """Grayscale [H, W] in [0, 1] -> [(box [x, y, w, h], 28x28 float32 digit)], left to right, by
    geometry alone (read lets the model settle what geometry cannot)."""
    gray, factor = reduced(gray)
    found = candidates(gray, SEGMENT.min_share if min_share is None else min_share)
    if not found:
        return []
    parts, ink = found
    return [(scaled(p.box, factor), to_mnist(with_loose_ink(p, parts[:k] + parts[k + 1:], ink))) for k, p in enumerate(parts)]


def reduced(gray):
    """A page over read_pixels -> (its box-reduced copy, the factor); others -> (the page, 1). A written
    number needs far fewer pixels, and labelling costs in proportion to the runs of ink: a 4 MP page
    of noise took 1.9 s at full size."""
    factor = math.ceil(math.sqrt(gray.size / SEGMENT.read_pixels))
    if factor == 1:
        return gray, 1
    h, w = gray.shape[0] // factor * factor, gray.shape[1] // factor * factor  # drops < factor px at the edges
    return gray[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3)), factor


def scaled(box, factor):
    """A box [x, y, w, h] on the reduced page -> on the uploaded one."""
    return [v * factor for v in box]


def candidates(gray, min_share):
    """-> (the digit candidates left to right as Parts, the ink map), or None for a page without ink."""
    ink = ink_map(gray)
    if ink is None:
        return None
    parts = components(ink, min_share)
    if len(parts) > SEGMENT.max_pieces:  # noise or texture: merging (quadratic in the parts) would take seconds
        return sorted(parts, key=lambda p: p.x0 + p.x1), ink
    # The line's digit height, the scale for everything after: of the parts once broken strokes are
    # joined, weighted by ink so that bits barely count.
    whole = merge(parts, ink)
    height = weighted_median([p.h for p in whole], [p.mass for p in whole])
    pieces = [piece for k, part in enumerate(parts) for piece in split(part, height, ink, k)]
    digits = drop_small(merge(pieces, ink), height, ink)
    digits.sort(key=lambda p: p.x0 + p.x1)  # by centre: a piece tucked under its neighbour's overhang
    return digits, ink


def weighted_median(values, weights):
    order = np.argsort(values)
    cumulative = np.cumsum(np.asarray(weights)[order])
    return float(np.asarray(values)[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def merge(parts, ink):
    """Join the pieces of one digit (see belong); not pieces cut apart on purpose."""
    parts = sorted(parts, key=lambda p: p.x0)
    merged = True
    while merged:
        merged = False
        for i, j in ((i, j) for i in range(len(parts)) for j in range(i + 1, len(parts))):
            if belong(parts[i], parts[j]) and not parts[i].cut_from & parts[j].cut_from:
                parts[i] = parts[i].union(parts[j], ink)
                del parts[j]
                merged = True
                break
    return parts


def belong(p, q):
    """Two pieces of one digit? Stacked: the narrower lies more than half over or under the other, close
    by (a 5's floating bar, a stroke broken by a faint band). Or a digit drawn in two strokes (a 4, a 6):
    a shorter piece beside a taller one, within its height, touching or nearly, the two no wider than
    the taller is high."""
    overlap = min(p.x1, q.x1) - max(p.x0, q.x0)
    if overlap > SEGMENT.stacked_overlap * min(p.w, q.w) and gap(p, q, "y") < SEGMENT.stacked_gap * max(p.h, q.h):
        return True
    short, tall = sorted((p, q), key=lambda part: part.h)
    slack = SEGMENT.two_stroke_slack * tall.h
    return (short.h < SEGMENT.two_stroke_height * tall.h and short.y0 >= tall.y0 - slack and short.y1 <= tall.y1 + slack
            and overlap > -slack and max(p.x1, q.x1) - min(p.x0, q.x0) <= tall.h)


def drop_small(parts, height, ink):
    """Bits much smaller than the line's digits (in height, or in ink and height) join the nearest part
    beside them; dropped when nothing is near (not a digit of this line)."""
    masses = [p.mass for p in parts]
    typical = weighted_median(masses, masses) if parts else 0
    while True:
        # Light but tall is a 1 in a fine pen, not a bit: only short pieces count as bits by their ink.
        bits = [p for p in parts if p.h < SEGMENT.bit_height * height
                or (p.mass < SEGMENT.bit_mass * typical and p.h < SEGMENT.light_bit_height * height)]
        if not bits:
            return parts
        bit = min(bits, key=lambda p: p.mass)
        parts.remove(bit)
        near = min(parts, key=lambda p: gap(p, bit, "x"), default=None)
        reach = SEGMENT.bit_reach * height
        if near is not None and gap(near, bit, "x") < reach and gap(near, bit, "y") < reach:
            parts[parts.index(near)] = near.union(bit, ink)


def gap(p, q, axis):
    """Blank space between two parts along x or y; negative where they overlap."""
    if axis == "x":
        return max(p.x0, q.x0) - min(p.x1, q.x1)
    return max(p.y0, q.y0) - min(p.y1, q.y1)


def split(part, height, ink, origin):
    """A part -> the digits in it. Cut where a top-to-bottom path crosses little ink for how wide the
    part is: a wide 0 costs two strokes to cut and stays whole, two digits touching cost a fraction
    of one. Recursive: three touching digits take two cuts."""
    if part.w < SEGMENT.min_cut_width * height:
        return [part]
    found = cheapest_cut(part, height, ink, origin)
    # A digit is at most about as wide as the line is high; each stroke the cut would cross makes a
    # split less likely to be right, so it must be that much wider.
    if found is None or part.w < height * (SEGMENT.cut_width + SEGMENT.cut_width_per_stroke * found[0]):
        return [part]
    return [d for p in found[1] for d in split(p, height, ink, origin)]


def cheapest_cut(part, height, ink, origin):
    """(strokes crossed, [left, right]) for the cheapest cut leaving a digit-sized piece on each side;
    None if there is none. Strokes: the cut's ink over the ink across one stroke of this part."""
    thickness = part.mass / (runs(part.mask) + runs(part.mask.T))
    margin = max(SEGMENT.cut_margin_px, round(SEGMENT.cut_margin * height))
    lo, hi = margin, part.w - margin
    if hi - lo < 1:
        return None
    total, path = cheapest_paths(part.ink[:, lo:hi], thickness / height)
    tried = []
    for end in np.argsort(total):
        if len(tried) >= SEGMENT.cut_tries:
            break
        if any(abs(end - t) < margin for t in tried):
            continue
        tried.append(end)
        left = part.mask & (np.arange(part.w)[None, :] < path(end)[:, None] + lo)
        if not left.any() or left.sum() == part.mask.sum():
            continue
        pieces = [Part(part.x0, part.y0, m, ink, part.cut_from | {origin}) for m in (left, part.mask & ~left)]
        if not belong(*pieces) and all(p.h >= SEGMENT.piece_height * height and p.w >= margin
                                       and p.mass >= SEGMENT.piece_mass * part.mass
                                       for p in pieces):
            return total[end] / thickness, pieces
    return None


def runs(mask):
    """How many runs of True along each row, summed."""
    return int(np.count_nonzero(mask[:, 1:] & ~mask[:, :-1]) + np.count_nonzero(mask[:, 0]))


def cheapest_paths(cost, bend=0.02):
    """Top-to-bottom paths through cost [h, w] moving at most one column per row; each bend costs a
    little so that a path through blank space goes straight. -> (total cost per end column,
    function end column -> the path's column in each row)."""
    h, w = cost.shape
    acc = np.empty((h, w), np.float32)
    acc[0] = cost[0]
    for y in range(1, h):
        prev = acc[y - 1]
        best = prev.copy()
        np.minimum(best[1:], prev[:-1] + bend, out=best[1:])
        np.minimum(best[:-1], prev[1:] + bend, out=best[:-1])
        acc[y] = best + cost[y]

    def path(end):
        cols = np.empty(h, int)
        x = int(end)
        for y in range(h - 1, -1, -1):
            cols[y] = x
            if y:
                x = min((c for c in (x, x - 1, x + 1) if 0 <= c < w),
                        key=lambda c: acc[y - 1, c] + (bend if c != x else 0))
        return cols

    return acc[-1], path
