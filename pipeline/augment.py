"""Random label-preserving warps of digit batches, run inside the tf.data pipeline (training only).

One bilinear resampling per batch applies a random affine map (rotation, scale, shift) plus a smooth
random displacement field (an elastic-like distortion, after Simard et al. 2003): cheaper and less
blurry than chaining one layer per transform.
"""
import math

import tensorflow as tf

SIZE = 28
COARSE = 4  # the elastic field is drawn on a COARSE x COARSE grid and upsampled: smooth by design


def random_warp(images, rotation_deg, shift_px, scale, elastic):
    """images: float32 [B, 28, 28, 1] -> the same shape, each image warped at random."""
    batch = tf.shape(images)[0]

    def uniform(limit, shape=None):
        return tf.random.uniform(shape if shape is not None else [batch], -limit, limit)

    angle = uniform(rotation_deg * math.pi / 180)
    zoom = 1.0 + uniform(float(scale))
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    # For each output pixel (y, x), the source point in the input: rotate/scale about the centre, shift.
    grid = tf.range(SIZE, dtype=tf.float32) - (SIZE - 1) / 2
    gy, gx = tf.meshgrid(grid, grid, indexing="ij")
    gy, gx = gy[None], gx[None]
    c, s = cos[:, None, None], sin[:, None, None]
    src_y = c * gy - s * gx + (SIZE - 1) / 2 + uniform(float(shift_px))[:, None, None]
    src_x = s * gy + c * gx + (SIZE - 1) / 2 + uniform(float(shift_px))[:, None, None]
    if elastic:
        field = tf.image.resize(uniform(float(elastic), [batch, COARSE, COARSE, 2]), [SIZE, SIZE], "bicubic")
        src_y += field[..., 0]
        src_x += field[..., 1]
    return bilinear_sample(images, src_y, src_x)


def bilinear_sample(images, src_y, src_x):
    """Sample images [B, H, W, 1] at float coordinates [B, H, W]; outside the image reads as 0 (background)."""
    batch = tf.shape(images)[0]
    padded = tf.reshape(tf.pad(images[..., 0], [[0, 0], [1, 1], [1, 1]]), [batch, -1])  # zero border
    width = SIZE + 2
    y0, x0 = tf.floor(src_y), tf.floor(src_x)
    wy, wx = src_y - y0, src_x - x0

    def at(y, x):  # +1 for the padding; clipping lands out-of-range points on the zero border
        yi = tf.clip_by_value(tf.cast(y, tf.int32) + 1, 0, SIZE + 1)
        xi = tf.clip_by_value(tf.cast(x, tf.int32) + 1, 0, SIZE + 1)
        return tf.gather(padded, tf.reshape(yi * width + xi, [batch, -1]), batch_dims=1)

    flat = lambda t: tf.reshape(t, [batch, -1])  # noqa: E731
    wy, wx = flat(wy), flat(wx)
    out = ((1 - wy) * (1 - wx) * at(y0, x0) + (1 - wy) * wx * at(y0, x0 + 1)
           + wy * (1 - wx) * at(y0 + 1, x0) + wy * wx * at(y0 + 1, x0 + 1))
    return tf.reshape(out, tf.shape(images))


def random_stroke(images, steps):
    """Thicker or thinner pens: each image's strokes grown or shrunk by a random whole number of steps in
    [-steps, steps]. Done at 4x resolution, where one 3x3 max (or min) filter moves each edge a quarter
    pixel: a step changes the stroke width by half a pixel at 28x28."""
    batch = tf.shape(images)[0]
    big = tf.image.resize(images, [4 * SIZE, 4 * SIZE], "bilinear")
    grown, shrunk, versions = big, big, {}
    for k in range(1, steps + 1):
        grown = tf.nn.max_pool2d(grown, 3, 1, "SAME")
        shrunk = -tf.nn.max_pool2d(-shrunk, 3, 1, "SAME")
        versions[k], versions[-k] = grown, shrunk
    stacked = tf.stack([images] + [tf.image.resize(versions[k], [SIZE, SIZE], "area")
                                   for k in range(-steps, steps + 1) if k], axis=1)  # [B, 2*steps+1, 28, 28, 1]
    which = tf.random.uniform([batch], 0, 2 * steps + 1, dtype=tf.int32)
    return tf.gather(stacked, which, axis=1, batch_dims=1)
