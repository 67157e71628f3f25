import numpy as np
import tensorflow as tf

from pipeline.augment import bilinear_sample, random_warp, stroke_versions
from pipeline.train import dataset


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


def test_pen_width_versions_grow_and_shrink_the_strokes_and_keep_the_original(digits):
    x = digits[0]
    versions = stroke_versions(x, 2, batch=7)  # batches that do not divide 30: each image lands once
    assert versions.shape == (30, 5, 28, 28) and versions.dtype == np.uint8
    np.testing.assert_array_equal(versions[:, 2], x)  # the middle version is the image itself
    ink = versions.astype(np.float64).sum(axis=(2, 3))  # [32, 5]: thinnest ... thickest
    assert np.all(np.diff(ink, axis=1) > 0)  # each step adds ink, for every digit
    assert np.all(versions[:, 0].astype(int).sum(axis=(1, 2)) > 0.3 * x.astype(int).sum(axis=(1, 2)))  # still there


def test_training_batches_cover_every_image_once_an_epoch_in_a_new_order(mnist):
    x, y = mnist["x_train"][:300], mnist["y_train"][:300]
    versions = stroke_versions(x, 1)
    ds = dataset(versions, y, 64, seed=0, augment=None, classes=10)
    epochs = [[(img.numpy(), lab.numpy()) for img, lab in ds] for _ in range(2)]
    for epoch in epochs:
        images = np.concatenate([b[0] for b in epoch])[..., 0]
        labels = np.concatenate([b[1] for b in epoch]).argmax(1)
        assert images.shape == (300, 28, 28) and images.dtype == np.float32 and images.max() <= 1.0
        np.testing.assert_array_equal(np.sort(labels), np.sort(y))
        # Each image is one of its own pen-width versions (no warp asked for), the versions mixed.
        as_bytes = np.rint(images * 255).astype(np.uint8)
        matches = [np.argwhere((versions == im).all(axis=(2, 3))) for im in as_bytes]  # (image, version) pairs
        assert all(len(m) for m in matches)
        assert {int(m[0][1]) for m in matches} == {0, 1, 2}
    first = np.concatenate([b[1] for b in epochs[0]]).argmax(1)
    second = np.concatenate([b[1] for b in epochs[1]]).argmax(1)
    assert not np.array_equal(first, second)  # reshuffled


def test_validation_batches_keep_the_order(mnist):
    x, y = mnist["x_train"][:200], mnist["y_train"][:200]
    labels = np.concatenate([lab.numpy() for _, lab in dataset(x, y, 64, 0, classes=10, shuffle=False)]).argmax(1)
    np.testing.assert_array_equal(labels, y)
