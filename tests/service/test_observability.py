"""Request ids, the access log and the Prometheus series a drift alarm needs: on the real app, with real
MNIST digits in real encoded files, and on the real gunicorn server."""
import io
import json
import re
import signal
import subprocess
import sys

import pytest

from serve import create_app
from serve.config import ConfigError, Settings
from testkit import ROOT
from testkit.images import on_paper, png_bytes
from testkit.server import fetch, free_port, server_env, wait_until_ready

HEX_ID = re.compile(r"[0-9a-f]{32}")


def metric(client, name, **labels):
    """The value of one series in /metrics (0 when absent)."""
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.split(" ")[0] == wanted:
            return float(line.split(" ")[-1])
    return 0.0


def test_a_request_id_is_echoed_when_usable_and_made_when_not(client, digits):
    image = on_paper(digits[0][0])
    assert client.post("/predict", data=image, content_type="image/png",
                       headers={"X-Request-ID": "checkout-42.a/b"}).headers["X-Request-ID"] == "checkout-42.a/b"
    made = [client.post("/predict", data=image, content_type="image/png", headers=headers).headers["X-Request-ID"]
            for headers in ({}, {"X-Request-ID": "has spaces"}, {"X-Request-ID": "x" * 129},
                            {"X-Request-ID": "ünïcode"}, {"X-Request-ID": ""})]
    assert all(HEX_ID.fullmatch(rid) for rid in made) and len(set(made)) == len(made)
    # errors and ops routes carry one too
    assert HEX_ID.fullmatch(client.post("/predict", data=b"<svg/>", content_type="image/png").headers["X-Request-ID"])
    assert client.get("/nowhere", headers={"X-Request-ID": "r1"}).headers["X-Request-ID"] == "r1"


def test_the_json_access_log_says_who_asked_what_and_what_was_answered(champion, digits, tmp_path):
    log = tmp_path / "access.jsonl"
    client = create_app(champion, Settings(model_poll_seconds=0, access_log=str(log), log_format="json")).test_client()
    images, labels = digits
    one = client.post("/predict", data=on_paper(images[0]), content_type="image/png", headers={"X-Request-ID": "a1"})
    batch = client.post("/predict/batch", data={"images": [(io.BytesIO(png_bytes(images[i])), f"{i}.png")
                                                           for i in range(3)]}, content_type="multipart/form-data")
    bad = client.post("/predict", data=b"GIF89a broken", content_type="image/gif")
    client.get("/health")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["route"] for line in lines] == ["/predict", "/predict/batch", "/predict", "/health"]
    first = lines[0]
    assert first["request_id"] == "a1" and first["status"] == 200 and first["model"] == "digits@3"
    assert first["prediction"] == one.get_json()["prediction"] and first["latency_ms"] > 0
    assert first["method"] == "POST" and first["bytes"] == len(one.get_data())
    assert lines[1]["prediction"] == [r["prediction"] for r in batch.get_json()["results"]]
    assert lines[1]["request_id"] == batch.headers["X-Request-ID"]
    assert lines[2]["status"] == bad.status_code >= 400 and lines[2]["model"] is None
    assert lines[3]["prediction"] is None


def test_a_bad_log_format_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("LOG_FORMAT", "yaml")
    with pytest.raises(ConfigError, match="LOG_FORMAT='yaml' is not one of text, json"):
        Settings()


def test_a_batch_is_one_model_call_with_the_same_answers_as_one_by_one(client, digits):
    images, _ = digits
    files = [png_bytes(images[i]) for i in range(8)]
    calls = metric(client, "digits_model_seconds_count")
    batch = client.post("/predict/batch", content_type="multipart/form-data",
                        data={"images": [(io.BytesIO(f), f"{i}.png") for i, f in enumerate(files)]
                              + [(io.BytesIO(b"not an image"), "bad.png")]}).get_json()
    assert metric(client, "digits_model_seconds_count") - calls == 1  # bad image included: still one call
    assert batch["results"][-1]["error"]["code"] == "not_an_image"
    for i, f in enumerate(files):
        alone = client.post("/predict", data=f, content_type="image/png").get_json()
        entry = {k: v for k, v in batch["results"][i].items() if k not in ("index", "filename")}
        assert json.dumps(entry, sort_keys=True) == json.dumps({k: v for k, v in alone.items() if k not in ("model", "id")},
                                                                sort_keys=True)


def test_prometheus_has_in_flight_model_latency_and_confidence(client, digits):
    images, _ = digits
    before = metric(client, "digits_prediction_confidence_count")
    answers = [client.post("/predict", data=on_paper(images[i]), content_type="image/png").get_json() for i in range(5)]
    blank = client.post("/predict", data=png_bytes(images[0] * 0), content_type="image/png").get_json()
    assert blank["reason"] == "blank"
    assert metric(client, "digits_prediction_confidence_count") - before == 5  # blanks have no confidence
    sure = sum(a["confidence"] > 0.9 for a in answers)
    assert metric(client, "digits_prediction_confidence_bucket", le="0.9") <= metric(
        client, "digits_prediction_confidence_count") - sure
    assert metric(client, "digits_model_seconds_sum") > 0
    assert metric(client, "digits_http_requests_in_flight") == 1  # the scrape itself: every other request left
    client.post("/predict", data=b"\x89PNG broken", content_type="image/png")
    assert metric(client, "digits_http_requests_in_flight") == 1  # errors included


def test_the_real_server_logs_json_lines_with_the_request_id(bundle, digits):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "serve", "--port", str(port)], cwd=ROOT,
                              env=server_env(bundle, WORKERS="2", THREADS="2", LOG_FORMAT="json"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base)
        status, _ = fetch(base + "/predict", on_paper(digits[0][5]))
        assert status == 200
    finally:
        server.send_signal(signal.SIGTERM)
        stdout, stderr = server.communicate(timeout=30)
    access = [json.loads(line) for line in stdout.splitlines()]  # every line JSON, or this raises
    assert any(a["route"] == "/predict" and a["status"] == 200 and HEX_ID.fullmatch(a["request_id"])
               and a["model"] == "digits@3" for a in access), stdout
    server_lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert any("Booting worker" in line["message"] for line in server_lines), stderr
