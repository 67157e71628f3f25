import numpy as np
import tensorflow as tf

from pipeline.augment import bilinear_sample, random_warp


def batch(digits):
    return tf.constant((digits[0].astype(np.float32) / 255.0)[..., None])


def test_sampling_at_integer_offsets_is_an_exact_shift(digits):
    images = batch(digits)
    grid = tf.range(28, dtype=tf.float32)
    gy, gx = tf.meshgrid(grid, grid, indexing="ij")
    n = images.shape[0]
    shifted = bilinear_sample(images, tf.tile(gy[None] - 2, [n, 1, 1]), tf.tile(gx[None] + 3, [n, 1, 1])).numpy()
    expected = np.zeros_like(images.numpy())
    expected[:, 2:, :-3] = images.numpy()[:, :-2, 3:]  # down 2, left 3, zeros shifted in
    np.testing.assert_allclose(shifted, expected, atol=1e-6)


def test_a_zero_warp_is_the_identity(digits):
    images = batch(digits)
    out = random_warp(images, rotation_deg=0, shift_px=0, scale=0, elastic=0).numpy()
    np.testing.assert_allclose(out, images.numpy(), atol=1e-5)


def test_warps_change_digits_but_keep_them_digits(digits):
    tf.random.set_seed(0)
    images = batch(digits)
    out = random_warp(images, rotation_deg=10, shift_px=2.5, scale=0.1, elastic=1.5).numpy()
    before = images.numpy()
    assert out.shape == before.shape and out.min() >= 0 and out.max() <= 1.0 + 1e-6
    assert np.abs(out - before).mean() > 0.02  # really warped
    ink_ratio = out.sum(axis=(1, 2, 3)) / before.sum(axis=(1, 2, 3))
    assert np.all((ink_ratio > 0.7) & (ink_ratio < 1.4))  # the digit stays on the canvas, at a similar size
    # Moved by about the configured shift, not thrown across the canvas.
    def centre(a):
        grid = np.indices((28, 28))
        return (grid[None] * a[:, None, :, :, 0]).sum(axis=(2, 3)) / a.sum(axis=(1, 2, 3))[:, None]

    assert np.abs(centre(out) - centre(before)).max() < 5
