"""Hostile uploads, at small size: testkit/hostile.py's generated cases against the real gunicorn server,
judged by testkit/fuzz.py, and property-based (Hypothesis) fuzzing of the decoder itself. The full size
(10,000 cases) is benchmarks/fuzz_uploads.py; docs/security.md has its result."""
import base64
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from digits.decode import ImageError, decode
from digits.normalise import normalise
from digits.settings import DECODE
from serve import create_app
from serve.config import Settings
from serve.model import load_bundle
from testkit import fuzz, hostile
from testkit.server import free_port, server_env, start_server, stop_server


@pytest.fixture(scope="module")
def outcome(bundle):
    port = free_port()
    server = start_server(port, server_env(bundle))
    try:
        yield fuzz.fuzz(port, server, 800, seed=0, threads=4)
    finally:
        stop_server(server)


def test_no_hostile_upload_gets_a_5xx_or_an_answer_outside_the_contract(outcome):
    print("\n" + fuzz.report(outcome))
    assert len(outcome["results"]) == 800 and not outcome["problems"], fuzz.report(outcome)
    families = {r.case.family for r in outcome["results"]}
    assert families == set(hostile.FAMILIES)  # every kind of hostility was sent
    assert {r.status for r in outcome["results"]} >= {200, 400, 405, 413, 415}


def test_no_worker_died_and_bombs_were_refused_with_memory_flat(outcome):
    assert outcome["workers_before"] == outcome["workers_after"]
    assert all(400 <= r.status < 500 or r.case.path == "/predict/batch" for r in outcome["bombs"])
    assert outcome["rss_after_bombs"] <= outcome["rss_before"] * 1.10 + 16


def valid(data):
    """decode's contract: a finite float32 grayscale image in [0, 1], at most work_pixels of it."""
    gray = decode(data)
    assert gray.dtype == np.float32 and gray.ndim == 2 and gray.size <= DECODE.work_pixels
    assert np.isfinite(gray).all() and gray.min() >= 0 and gray.max() <= 1
    out = normalise(gray)
    assert out.shape == (28, 28) and 0 <= out.min() and out.max() <= 1


def survives(data):
    try:
        valid(data)
    except ImageError as e:
        assert 400 <= e.status < 500 and e.code and e.message


FILES = hostile.valid_files()
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@FUZZ
@given(st.binary(max_size=4096))
def test_decode_survives_any_bytes(data):
    survives(data)


@FUZZ
@given(st.sampled_from(sorted(FILES)), st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=12),
       st.integers(0, 10**6))
def test_decode_survives_every_format_corrupted_and_cut_short(name, flips, cut):
    data = bytearray(FILES[name])
    for at, mask in flips:
        data[at % len(data)] ^= mask
    survives(bytes(data[:max(cut % (len(data) + 1), 1)]))


def test_every_valid_file_the_fuzzer_starts_from_decodes():
    for name, data in FILES.items():
        valid(data)  # the corruptions above start from files that really work


def test_a_big_scan_is_shrunk_before_normalising_and_still_read(small_onnx, digits, bundle):
    """A 2600x2600 grayscale scan (6.8 MP, paper noise so it compresses like a real one): decode hands
    normalise at most work_pixels, and the digit on it is read as it is at the scan's own size."""
    images, labels = digits
    rng = np.random.default_rng(0)
    page = rng.normal(225, 6, (2600, 2600)).clip(0, 255).astype(np.uint8)
    digit = np.asarray(Image.fromarray(255 - images[3]).resize((900, 900), Image.BILINEAR), np.float32)
    page[800:1700, 900:1800] = np.minimum(page[800:1700, 900:1800], digit).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(page).save(buffer, format="PNG")
    assert decode(buffer.getvalue()).shape == (1300, 1300)  # reduced 2x, by a box filter
    client = create_app(load_bundle(bundle), Settings(model_poll_seconds=0)).test_client()
    answer = client.post("/predict", data=buffer.getvalue(), content_type="image/png").get_json()
    assert answer["prediction"] == labels[3]


def test_deep_json_and_wrapped_base64_are_400s_and_options_is_a_405(bundle):
    client = create_app(load_bundle(bundle), Settings(model_poll_seconds=0)).test_client()
    deep = client.post("/predict", data="[" * 100_000 + "]" * 100_000, content_type="application/json")
    assert deep.status_code == 400 and deep.get_json()["error"]["code"] == "bad_json"
    text = base64.b64encode(FILES["png-gray"]).decode()
    wrapped = "\r\n".join(text[i:i + 76] for i in range(0, len(text), 76))  # as MIME encoders write it
    wrong = client.post("/predict", json={"image": wrapped})  # strict, as /openapi.json's pattern says
    assert wrong.status_code == 400 and wrong.get_json()["error"]["code"] == "bad_base64"
    assert client.post("/predict", json={"image": text}).get_json()["prediction"] == 3
    for path in ("/predict", "/static/app.js"):
        options = client.options(path)
        assert options.status_code == 405 and options.get_json()["error"]["code"] == "method_not_allowed"
