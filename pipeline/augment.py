"""Label-preserving augmentation: random warps of digit batches inside the tf.data pipeline, and pen-width
versions of every training image drawn once before training (training only).

One bilinear resampling per batch applies a random affine map (rotation, scale, shift) plus a smooth
random displacement field (an elastic-like distortion, after Simard et al. 2003): cheaper and less
blurry than chaining one layer per transform.
"""
import math

import numpy as np
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


def stroke_versions(x, steps, batch=2048):
    """Thicker and thinner pens, drawn once before training: uint8 [N, 28, 28] -> uint8 [N, 2*steps+1, 28, 28],
    version `steps` being the image itself and version steps+k its strokes grown (k > 0) or shrunk (k < 0)
    by k steps. Done at 4x resolution, where one 3x3 max (or min) filter moves each edge a quarter pixel: a
    step changes the stroke width by half a pixel at 28x28. Training picks one version per image per epoch
    (`pipeline.train.dataset`), which costs a gather instead of this per batch (docs/benchmarks.md)."""
    out = np.empty((len(x), 2 * steps + 1, SIZE, SIZE), np.uint8)
    for start in range(0, len(x), batch):
        images = tf.convert_to_tensor(x[start:start + batch, :, :, None], tf.float32)
        big = tf.image.resize(images, [4 * SIZE, 4 * SIZE], "bilinear")
        grown, shrunk, versions = big, big, {0: images}
        for k in range(1, steps + 1):
            grown = tf.nn.max_pool2d(grown, 3, 1, "SAME")
            shrunk = -tf.nn.max_pool2d(-shrunk, 3, 1, "SAME")
            versions[k] = tf.image.resize(grown, [SIZE, SIZE], "area")
            versions[-k] = tf.image.resize(shrunk, [SIZE, SIZE], "area")
        for k in range(-steps, steps + 1):
            out[start:start + batch, steps + k] = np.clip(np.rint(versions[k].numpy()[..., 0]), 0, 255)
    return out
