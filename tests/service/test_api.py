"""The HTTP API through Flask's test client, with a real (small, quickly trained) ONNX model and real
encoded files: every answer shape and every error code."""
import base64
import io

import numpy as np
import pytest
from PIL import Image

from digits.contract import sha256
from serve import create_app
from serve.config import ConfigError, Settings
from serve.model import verified
from testkit.images import on_paper, png_bytes as png

FORMATS = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]


def error_of(response, status, code):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == code
    assert response.get_json()["error"]["message"]


def test_predict_answers_in_every_way_a_client_sends_an_image(client, digits):
    image, label = digits[0][4], int(digits[1][4])
    data = on_paper(image)
    encoded = base64.b64encode(data).decode()
    answers = [
        client.post("/predict", data={"image": (io.BytesIO(data), "d.png")}),
        client.post("/predict", data={"file": (io.BytesIO(data), "d.png")}),
        client.post("/predict", data=data, content_type="image/png"),
        client.post("/predict", json={"image": encoded}),
        client.post("/predict", json={"image": "data:image/png;base64," + encoded}),
    ]
    for response in answers:
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert body["prediction"] == label and body["model"] == "digits@3"
        assert len(body["probabilities"]) == 10 and abs(sum(body["probabilities"]) - 1) < 1e-3
        assert body["confidence"] == max(body["probabilities"])


def test_a_blank_page_is_no_digit_and_says_so(client):
    for page in (np.full((120, 90), 255, np.uint8), np.full((60, 60), 0, np.uint8)):
        body = client.post("/predict", data=png(page), content_type="image/png").get_json()
        assert body["prediction"] is None and body["reason"] == "blank" and body["confidence"] == 0.0


def test_confidence_is_calibrated_with_the_registered_temperature_and_threshold(small_onnx, champion, digits):
    """The same model registered with T = 2: softer answers. Then a rejection threshold between a real
    digit's confidence and scribbled noise's: the noise comes back "not_a_digit", the digit still reads."""
    raw = create_app(champion, Settings()).test_client()
    tagged = verified(small_onnx, sha256(small_onnx), 1, name="digits", version="8", alias="champion", run_id="test",
                      tags={"variant": "cnn", "temperature": "2.0"})
    soft = create_app(tagged, Settings()).test_client()
    data = on_paper(digits[0][4])
    noise = png(np.where(np.random.default_rng(0).random((80, 80)) < 0.3, 0, 255).astype(np.uint8))
    before, after = (c.post("/predict", data=data, content_type="image/png").get_json() for c in (raw, soft))
    assert after["prediction"] == before["prediction"] and after["confidence"] < before["confidence"]
    logits = np.log(np.clip(before["probabilities"], 1e-12, 1)) / 2.0
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert np.allclose(after["probabilities"], expected, atol=1e-4)

    noise_confidence = soft.post("/predict", data=noise, content_type="image/png").get_json()["confidence"]
    assert noise_confidence < after["confidence"]
    tagged.tags["rejection_threshold"] = str((noise_confidence + after["confidence"]) / 2)
    body = soft.post("/predict", data=noise, content_type="image/png").get_json()
    assert body["prediction"] is None and body["reason"] == "not_a_digit", body
    assert body["confidence"] == noise_confidence and len(body["probabilities"]) == 10
    assert soft.post("/predict", data=data, content_type="image/png").get_json()["prediction"] == before["prediction"]


def test_a_model_that_rejects_known_digits_is_not_served(small_onnx):
    from serve.model import ModelError

    with pytest.raises(ModelError, match="rejected as not a digit"):
        verified(small_onnx, sha256(small_onnx), 1, name="digits", version="9", alias="champion", run_id="test",
                 tags={"rejection_threshold": "0.999999"})


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_common_format_is_read(client, digits, fmt):
    correct = sum(client.post("/predict", data=on_paper(image, fmt=fmt), content_type="application/octet-stream")
                  .get_json()["prediction"] == int(label) for image, label in zip(*digits))
    assert correct >= 0.8 * len(digits[1])


def test_a_batch_answers_in_order_and_a_bad_image_is_its_own_error(client, digits):
    files = [(io.BytesIO(on_paper(digits[0][i])), f"{i}.png") for i in (0, 3, 6)]
    files.insert(1, (io.BytesIO(b"not an image"), "bad.png"))
    response = client.post("/predict/batch", data={"images": files})
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [r["filename"] for r in results] == ["0.png", "bad.png", "3.png", "6.png"]
    assert results[1]["error"]["code"] == "not_an_image" and "prediction" not in results[1]
    assert [r["prediction"] for r in results if "error" not in r] == [int(digits[1][i]) for i in (0, 3, 6)]


def test_batch_limits(champion, digits):
    client = create_app(champion, Settings(max_batch_images=2)).test_client()
    files = [(io.BytesIO(on_paper(digits[0][i])), f"{i}.png") for i in range(3)]
    error_of(client.post("/predict/batch", data={"images": files}), 413, "too_many_images")
    error_of(client.post("/predict/batch", data={}), 400, "no_image")


def pdf_bytes():
    buffer = io.BytesIO()
    Image.new("RGB", (50, 50), "white").save(buffer, format="PDF")  # a real PDF, as Pillow writes it
    return buffer.getvalue()


def ico_bytes():
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "white").save(buffer, format="ICO")  # Pillow reads it; we do not take it
    return buffer.getvalue()


@pytest.mark.parametrize("make_data, status, code", [
    (lambda d: b"", 400, "empty"),
    (lambda d: b"GIF89a but then nothing useful", 400, "not_an_image"),
    (lambda d: on_paper(d)[:300], 400, "corrupt_image"),
    (lambda d: b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', 415, "unsupported_type"),
    (lambda d: b"  <svg xmlns='http://www.w3.org/2000/svg'><circle r='4'/></svg>", 415, "unsupported_type"),
    (lambda d: pdf_bytes(), 415, "unsupported_type"),
    (lambda d: ico_bytes(), 415, "unsupported_type"),
    (lambda d: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", 415, "unsupported_type"),
])
def test_bad_uploads_are_clear_json_errors(client, digits, make_data, status, code):
    error_of(client.post("/predict", data=make_data(digits[0][0]), content_type="image/png"), status, code)


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(champion, digits):
    client = create_app(champion, Settings(max_image_pixels=100 * 100)).test_client()
    error_of(client.post("/predict", data=on_paper(digits[0][0]), content_type="image/png"), 422, "too_many_pixels")


def test_a_decompression_bomb_is_refused(client):
    buffer = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buffer, format="PNG")  # 144 MP of zeros: ~20 kB on the wire
    assert len(buffer.getvalue()) < 100_000
    error_of(client.post("/predict", data=buffer.getvalue(), content_type="image/png"), 422, "too_many_pixels")


def test_a_body_over_the_upload_limit_is_413(champion, digits):
    client = create_app(champion, Settings(max_upload_bytes=1000)).test_client()
    error_of(client.post("/predict", data=np.zeros(5000, np.uint8).tobytes(), content_type="image/png"),
             413, "request_entity_too_large")


def test_unknown_routes_methods_and_bodies_are_json_errors(client):
    error_of(client.get("/nowhere"), 404, "not_found")
    error_of(client.get("/predict"), 405, "method_not_allowed")
    error_of(client.post("/predict", data="hello", content_type="text/plain"), 400, "no_image")
    error_of(client.post("/predict", json={"picture": "x"}), 400, "bad_request")
    error_of(client.post("/predict", json={"image": "%%% not base64"}), 400, "bad_base64")


def test_limits_come_from_the_environment_and_bad_ones_are_clear(monkeypatch):
    monkeypatch.setenv("MAX_BATCH_IMAGES", "5")
    monkeypatch.setenv("MAX_IMAGE_PIXELS", "1000")
    assert Settings().max_batch_images == 5 and Settings().max_image_pixels == 1000
    monkeypatch.setenv("MAX_UPLOAD_BYTES", "ten megabytes")
    with pytest.raises(ConfigError, match="MAX_UPLOAD_BYTES='ten megabytes' is not a whole number"):
        Settings()
