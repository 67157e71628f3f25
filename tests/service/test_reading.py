"""POST /read with the number reader (issue 30): real encoded pages of real MNIST test digits through the
app (touching ones: tests/e2e/test_robustness_targets.py, on the CI pipeline's reader); the reader registered as digits-reader, verified, self-tested, followed when its
alias moves and refused when it is bad; bundles; and /read without a reader (the segmenter, as before)."""
import json

import numpy as np
import pytest
from PIL import Image

from digits.contract import sha256
from serve import create_app
from serve.config import Settings
from serve.model import export_bundle, load_reader
from testkit.images import png_bytes as png
from testkit.models import zeros_model
from testkit.uploads import encode, number_page

NO_POLL = Settings(model_poll_seconds=0)


@pytest.fixture
def reading(champion, reader):
    return create_app(champion, NO_POLL, reader=reader).test_client()


def overlap(a, b) -> float:
    """Intersection over union of two [x, y, w, h] boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_numbers_are_read_by_the_reader_with_a_box_per_digit(reading, mnist):
    x, y = mnist["x_test"], mnist["y_test"]
    rng = np.random.default_rng(0)
    right, overlaps = 0, []
    for k in range(20):
        picks = rng.choice(len(x), size=int(rng.integers(2, 7)))
        gray, boxes = number_page(list(x[picks]), rng)
        body = reading.post("/read", data=encode(Image.fromarray(gray), "JPEG", quality=90),
                            content_type="image/jpeg").get_json()
        assert body["model"] == "digits-reader@2+digits@3"  # conf/image.toml [read] combine = "surer"
        text = "".join(str(v) for v in y[picks])
        if body["number"] == text:
            right += 1
            assert [d["prediction"] for d in body["digits"]] == [int(c) for c in text]
            for digit, box in zip(body["digits"], boxes):
                overlaps.append(overlap(digit["box"], box))
                assert len(digit["probabilities"]) == 10 and 0 < digit["confidence"] <= 1
                assert digit["confidence"] == max(digit["probabilities"])
    assert right >= 14  # the test reader (conftest: 6 epochs on plain ink, with the segmenter) read 17 of these 20
    # Boxes come from the alignment (or from the cut, where the segmenter's reading won): a repeated digit
    # (the 11 in 693511) can take a sliver of its twin.
    assert np.median(overlaps) > 0.7 and np.mean(np.array(overlaps) > 0.4) >= 0.9, overlaps


def test_a_blank_page_and_a_debug_answer(reading, mnist):
    blank = reading.post("/read", data=png(np.full((50, 80), 255, np.uint8)), content_type="image/png").get_json()
    assert blank == {"number": None, "reason": "blank", "digits": [], "model": "digits-reader@2+digits@3"}
    gray, _ = number_page(list(mnist["x_test"][:3]), np.random.default_rng(1))
    body = reading.post("/read?debug=1", data=png(gray), content_type="image/png").get_json()
    assert body["digits"] and all(d["input"].startswith("data:image/png;base64,") for d in body["digits"])


def test_the_reader_alone_or_with_the_segmenter_where_it_is_surer(champion, reader, mnist, monkeypatch):
    """combine="reader": the reader's answer. "surer": the segmenter's reading replaces it only where it is a
    number, differs, and its least sure digit is surer; never where the reader saw ink that is no digit."""
    from serve import reading

    gray, _ = number_page(list(mnist["x_test"][:4]), np.random.default_rng(2))
    alone = reading.number(gray / 255.0, champion, reader, combine="reader")
    assert alone["model"] == "digits-reader@2"
    both = reading.number(gray / 255.0, champion, reader, combine="surer", margin=0.0)
    assert both["model"] == "digits-reader@2+digits@3"
    cut = {"number": "1234", "digits": [{"prediction": 1, "confidence": 0.99}] * 4, "model": "digits@3"}
    monkeypatch.setattr(reading.answers, "number", lambda *a, **k: cut)
    unsure = {"number": "1284", "digits": [{"prediction": 2, "confidence": 0.6}] * 4}
    monkeypatch.setattr(reading, "by_reader", lambda *a: (dict(unsure), False))
    assert reading.number(gray, champion, reader, combine="surer", margin=0.0)["number"] == "1234"
    assert reading.number(gray, champion, reader, combine="surer", margin=0.5)["number"] == "1284"
    monkeypatch.setattr(reading, "by_reader", lambda *a: ({"number": None, "reason": "not_a_digit", "digits": []}, True))
    assert reading.number(gray, champion, reader, combine="surer", margin=0.0)["number"] is None


def test_without_a_reader_read_cuts_the_number_into_digits(client, mnist):
    gray, _ = number_page(list(mnist["x_test"][:3]), np.random.default_rng(1))
    body = client.post("/read", data=png(gray), content_type="image/png").get_json()
    assert body["model"] == "digits@3" and len(body["digits"]) == 3
    assert client.get("/model").get_json()["reader"] == {"not_served": "no reader given"}


def test_the_reader_is_followed_in_the_registry_and_bad_versions_are_refused(registry, small_onnx,
                                                                           small_reader_onnx, monkeypatch):
    registry(small_onnx)
    app = create_app(settings=NO_POLL)  # no reader registered yet: /read cuts numbers, /model says why
    client = app.test_client()
    assert "digits-reader@champion" in client.get("/model").get_json()["reader"]["not_served"]
    registry(small_reader_onnx, name="digits-reader")
    assert app.reading.refresh() == "switched"
    assert client.get("/model").get_json()["reader"]["version"] == "1"
    registry(small_reader_onnx, name="digits-reader", recorded_sha="0" * 64)  # its file is not what was recorded
    assert app.reading.refresh() == "refused" and "sha256" in app.reading.last_error
    registry(zeros_model(), name="digits-reader")  # a digit model's contract, not a reader's
    assert app.reading.refresh() == "refused" and "digits-reader@3 cannot run" in app.reading.last_error
    registry(small_reader_onnx, name="digits-reader")
    assert app.reading.refresh() == "switched" and app.reading.champion.label == "digits-reader@4"
    monkeypatch.setenv("READER_NAME", "off")
    assert load_reader()[:2] == (None, "READER_NAME=off")


def test_a_bundle_carries_the_reader(champion, reader, tmp_path, monkeypatch):
    export_bundle(champion, tmp_path)
    export_bundle(reader, tmp_path / "reader")
    assert json.loads((tmp_path / "reader" / "model.json").read_text())["kind"] == "reader"
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    app = create_app(settings=NO_POLL)
    assert app.reading.champion.label == "digits-reader@2" and app.reading.champion.source == "bundle"
    assert app.reading.champion.sha256 == sha256((tmp_path / "reader" / "model.onnx").read_bytes())
