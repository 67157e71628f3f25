"""Where the ink is: a grayscale page -> ink strength (0 = paper), its connected components, and block maxima.

ink_map finds the ink whichever way it goes (dark on light or light on dark), flattens the paper to 0
under uneven light (a fitted surface, not a local filter that would eat thick strokes) and stretches the
ink to 1, with printed lines (rules, grids, boxes: digits/lines.py) painted out before it is stretched.
Settings: conf/image.toml [normalise].
"""
import numpy as np
from PIL import Image

from digits.lines import remove_lines
from digits.settings import NORMALISE


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
    # Printed lines go before the stretch: a dark grid must not make a faint pencil digit look like noise.
    ink = remove_lines(ink, peak)
    peak = float(ink.max())
    if peak < NORMALISE.blank_peak:
        return None
    ink *= 1.0 / peak
    ink[ink < NORMALISE.ink_cutoff] = 0
    return ink if ink.any() else None
