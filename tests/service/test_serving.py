"""Serving beyond one request: readiness, metrics, the OpenAPI document against real answers, /read,
the champion switching when its alias moves in a real MLflow registry, baked-in bundles, the CLI and
the real gunicorn server over HTTP."""
import io
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

from digits.contract import sha256
from serve import create_app
from serve.config import ConfigError, Settings
from serve.model import ModelError, Registry, export_bundle, load_bundle
from testkit import ROOT
from testkit.images import on_paper, png_bytes as png
from testkit.models import zeros_model
from testkit.server import fetch, free_port, server_env, wait_until_ready

NO_POLL = Settings(model_poll_seconds=0)


def metric(client, name, **labels):
    """The value of one Prometheus sample from GET /metrics (0 if absent)."""
    text = client.get("/metrics").get_data(as_text=True)
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == want:
            return float(match.group(2))
    return 0.0


def test_health_ready_and_model_describe_what_is_served(client):
    assert client.get("/health").get_json() == {"status": "ok"}
    ready = client.get("/ready").get_json()
    assert ready["status"] == "ready" and ready["model"] == "digits@3"
    model = client.get("/model").get_json()
    assert model["version"] == "3" and model["sha256"] and model["metrics"] == {"val_accuracy": 0.97}


def test_metrics_count_requests_predictions_and_rejections(client, digits):
    image, label = digits[0][5], int(digits[1][5])
    before = (metric(client, "digits_http_requests_total", route="/predict", method="POST", status="200"),
              metric(client, "digits_predictions_total", digit=label),
              metric(client, "digits_rejected_uploads_total", reason="not_an_image"),
              metric(client, "digits_http_request_duration_seconds_count", route="/predict"))
    assert client.post("/predict", data=on_paper(image), content_type="image/png").get_json()["prediction"] == label
    assert client.post("/predict", data=b"garbage", content_type="image/png").status_code == 400
    client.get("/no/such/page/12345")
    after = (metric(client, "digits_http_requests_total", route="/predict", method="POST", status="200"),
             metric(client, "digits_predictions_total", digit=label),
             metric(client, "digits_rejected_uploads_total", reason="not_an_image"),
             metric(client, "digits_http_request_duration_seconds_count", route="/predict"))
    assert [a - b for a, b in zip(after, before)] == [1, 1, 1, 2]
    text = client.get("/metrics").get_data(as_text=True)
    assert "/no/such/page" not in text  # unknown paths share one label: no unbounded label values
    assert 'digits_model_version_info{model="digits@3"} 1.0' in text


def schema_of(spec, path, status="200", method="post"):
    response = spec["paths"][path][method]["responses"][status]
    return {**response["content"]["application/json"]["schema"], "components": spec["components"]}


def test_openapi_document_matches_the_routes_and_the_real_answers(client, digits):
    spec = client.get("/openapi.json").get_json()
    jsonschema.Draft202012Validator.check_schema(spec["components"]["schemas"]["Error"])
    assert spec["openapi"].startswith("3.")
    app_routes = {(re.sub(r"<(\w+)>", r"{\1}", rule.rule), method.lower())  # /v2/models/<name> is {name} there
                  for rule in client.application.url_map.iter_rules()
                  for method in rule.methods - {"HEAD", "OPTIONS"} if rule.endpoint != "static"}
    documented = {(path, method) for path, methods in spec["paths"].items() for method in methods}
    assert app_routes == documented
    data = on_paper(digits[0][0])
    answers = {
        ("/predict", "200"): client.post("/predict?debug=1", data=data, content_type="image/png"),
        ("/predict", "400"): client.post("/predict", data=b"nope", content_type="image/png"),
        ("/predict", "415"): client.post("/predict", data=b"%PDF-1.4", content_type="image/png"),
        ("/predict/batch", "200"): client.post("/predict/batch", data={"images": [
            (io.BytesIO(data), "a.png"), (io.BytesIO(b"x"), "b.png")]}),
        ("/read", "200"): client.post("/read", data=data, content_type="image/png"),
    }
    for (path, status), response in answers.items():
        assert str(response.status_code) == status
        jsonschema.validate(response.get_json(), schema_of(spec, path, status))
    for path in ("/ready", "/model", "/health"):
        jsonschema.validate(client.get(path).get_json(), schema_of(spec, path, method="get"))
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert all(path in page.get_data(as_text=True) for path in spec["paths"])


def test_debug_returns_the_28x28_the_model_saw(client, digits):
    body = client.post("/predict?debug=1", data=on_paper(digits[0][0]), content_type="image/png").get_json()
    seen = np.asarray(Image.open(io.BytesIO(__import__("base64").b64decode(body["input"].split(",")[1]))))
    assert seen.shape == (28, 28) and seen.max() > 200 and seen[:3].max() == 0  # white ink, empty margin
    assert "input" not in client.post("/predict", data=on_paper(digits[0][0]), content_type="image/png").get_json()


def test_read_finds_each_digit_left_to_right(client, digits):
    images, labels = digits
    picks = [1, 4, 7, 13, 22]  # five different test digits
    page = np.full((120, 560), 255, np.uint8)
    xs, ys = [20, 110, 230, 300, 430], [20, 34, 12, 28, 40]  # uneven gaps, vertical jitter
    for i, x, y in zip(picks, xs, ys):
        page[y:y + 56, x:x + 56] = 255 - np.asarray(Image.fromarray(images[i]).resize((56, 56)))
    body = client.post("/read", data=png(page), content_type="image/png").get_json()
    singles = [client.post("/predict", data=on_paper(images[i]), content_type="image/png").get_json()["prediction"]
               for i in picks]
    assert [d["prediction"] for d in body["digits"]] == singles
    assert body["number"] == "".join(map(str, singles))
    assert sum(s == int(labels[i]) for s, i in zip(singles, picks)) >= 4
    for digit, x, y in zip(body["digits"], xs, ys):  # each box lies inside the square the digit was drawn in
        left, top, width, height = digit["box"]
        assert x <= left and left + width <= x + 56 and y <= top and top + height <= y + 56
    blank = client.post("/read", data=png(np.full((50, 50), 255, np.uint8)), content_type="image/png").get_json()
    assert blank["number"] is None and blank["reason"] == "blank" and blank["digits"] == []


# --- a real MLflow registry: the alias moves, servers follow, bad versions are refused ----------------

def test_a_moved_alias_is_followed_and_bad_versions_are_refused(registry, small_onnx, digits):
    registry(small_onnx)
    app = create_app(settings=NO_POLL)
    client, serving = app.test_client(), app.serving
    data = on_paper(digits[0][0])
    assert client.post("/predict", data=data, content_type="image/png").get_json()["model"] == "digits@1"
    assert serving.refresh() == "unchanged"

    registry(small_onnx)
    assert serving.refresh() == "switched"
    assert client.post("/predict", data=data, content_type="image/png").get_json()["model"] == "digits@2"
    assert client.get("/model").get_json()["version"] == "2"

    registry(small_onnx, recorded_sha="0" * 64)  # version 3: its file does not match its record
    assert serving.refresh() == "refused"
    assert "sha256" in client.get("/ready").get_json()["last_switch_error"]
    registry(zeros_model())  # version 4: loads, but reads the known digits wrong
    assert serving.refresh() == "refused"
    assert "self-test" in client.get("/model").get_json()["last_switch_error"]
    answer = client.post("/predict", data=data, content_type="image/png")
    assert answer.status_code == 200 and answer.get_json()["model"] == "digits@2"  # the old one keeps serving
    assert metric(client, "digits_model_switches_total", outcome="refused") >= 2


def test_servers_switch_while_answering_without_failing_a_request(registry, small_onnx, digits, request):
    registry(small_onnx)
    app = create_app(settings=Settings(model_poll_seconds=0.2))  # the real polling thread
    request.addfinalizer(app.serving.stop)
    data, seen, failures, stop = on_paper(digits[0][0]), set(), [], threading.Event()

    def hammer():
        client = app.test_client()
        while not stop.is_set():
            response = client.post("/predict", data=data, content_type="image/png")
            if response.status_code != 200:
                failures.append(response.get_data(as_text=True))
            else:
                seen.add(response.get_json()["model"])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        registry(small_onnx)
        deadline = time.time() + 20
        while app.serving.champion.version != "2" and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert app.serving.champion.version == "2"
    assert failures == [] and seen == {"digits@1", "digits@2"}


def int8_copy(register, int8_onnx, float_version, float_bytes, recorded_sha=None):
    """Register int8_onnx as the INT8 copy of float_version, as pipeline/quantise.py does."""
    tags = {"source_version": float_version, "source_sha256": sha256(float_bytes), "check": "passed"}
    return register(int8_onnx, recorded_sha, name="digits-int8", tags=tags)


def test_the_int8_copy_of_the_champion_serves_in_its_place_and_only_of_that_version(registry, small_onnx, int8_onnx,
                                                                                     digits, monkeypatch):
    registry(small_onnx)
    app = create_app(settings=NO_POLL)
    client, data = app.test_client(), on_paper(digits[0][0])
    assert client.get("/model").get_json()["int8_not_served"].startswith("no model registered as digits-int8@champion")

    int8_copy(registry, int8_onnx, "1", small_onnx)
    assert app.serving.refresh() == "switched"  # the registry's key went from "1" to "1+1"
    answer = client.post("/predict", data=data, content_type="image/png").get_json()
    assert answer["model"] == "digits-int8@1" and answer["prediction"] == digits[1][0]
    described = client.get("/model").get_json()
    assert (described["name"], described["quantised_from"], described["int8_not_served"]) == ("digits-int8", "digits@1", None)
    assert app.serving.refresh() == "unchanged"

    # The float alias moves on: the copy of version 1 must not serve for version 2.
    registry(small_onnx)
    assert app.serving.refresh() == "switched"
    assert client.post("/predict", data=data, content_type="image/png").get_json()["model"] == "digits@2"
    assert "is the copy of digits version 1, not of 2" in client.get("/model").get_json()["int8_not_served"]

    # A copy whose file does not match its record is refused; the float version serves, and that is said.
    int8_copy(registry, int8_onnx, "2", small_onnx, recorded_sha="0" * 64)
    assert app.serving.refresh() == "refused"
    assert client.post("/predict", data=data, content_type="image/png").get_json()["model"] == "digits@2"
    assert "digits-int8 version 2 refused" in client.get("/model").get_json()["int8_not_served"]
    assert app.serving.refresh() == "unchanged"  # not fetched again until an alias moves

    int8_copy(registry, int8_onnx, "2", small_onnx)
    assert app.serving.refresh() == "switched"
    assert client.post("/predict", data=data, content_type="image/png").get_json()["model"] == "digits-int8@3"

    monkeypatch.setenv("MODEL_PRECISION", "float")
    assert create_app(settings=NO_POLL).test_client().post("/predict", data=data, content_type="image/png") \
        .get_json()["model"] == "digits@2"
    monkeypatch.setenv("MODEL_PRECISION", "fp16")
    with pytest.raises(ConfigError, match="MODEL_PRECISION='fp16' is not one of int8, float"):
        create_app(settings=NO_POLL)


def test_startup_refuses_without_a_verified_model(registry, tmp_path, monkeypatch, small_onnx):
    with pytest.raises(ModelError, match="no model registered as digits@champion"):
        create_app(settings=NO_POLL)
    registry(small_onnx, recorded_sha="f" * 64)
    with pytest.raises(ModelError, match="refusing to serve"):
        create_app(settings=NO_POLL)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/absent/mlflow.db")
    with pytest.raises(ModelError, match="no MLflow store"):
        create_app(settings=NO_POLL)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9/")  # nothing listens on port 9
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(ModelError, match="cannot reach the MLflow registry"):
        Registry().version()


def test_a_bundle_serves_without_a_registry_and_is_still_verified(champion, tmp_path):
    export_bundle(champion, tmp_path / "ok")
    loaded = load_bundle(tmp_path / "ok")
    assert (loaded.label, loaded.sha256, loaded.source) == (champion.label, champion.sha256, "bundle")
    bad = tmp_path / "bad"
    export_bundle(champion, bad)
    (bad / "model.onnx").write_bytes((bad / "model.onnx").read_bytes()[:-10])
    with pytest.raises(ModelError, match="sha256"):
        load_bundle(bad)
    with pytest.raises(ModelError, match="does not hold a model bundle"):
        load_bundle(tmp_path / "nothing")
    wrong = tmp_path / "wrong"
    export_bundle(champion, wrong)
    (wrong / "model.onnx").write_bytes(zeros_model())
    meta = json.loads((wrong / "model.json").read_text())
    (wrong / "model.json").write_text(json.dumps({**meta, "sha256": sha256(zeros_model())}))
    with pytest.raises(ModelError, match="self-test"):
        load_bundle(wrong)


# --- the command line and the real server, as separate processes ------------------------------------

def test_cli_predicts_files_and_folders_through_the_api_path(bundle, digits, tmp_path):
    images, labels = digits
    for i in range(5):
        (tmp_path / f"{i}.png").write_bytes(on_paper(images[i]))
    (tmp_path / "notes.txt").write_text("not an image, not picked up from a folder")
    (tmp_path / "broken.png").write_bytes(on_paper(images[0])[:300])  # a real PNG, truncated
    run = subprocess.run([sys.executable, "-m", "serve", "predict", "--json", str(tmp_path)], cwd=ROOT,
                         env=server_env(bundle), capture_output=True, text=True, timeout=120)
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [Path(line["file"]).name for line in lines] == ["0.png", "1.png", "2.png", "3.png", "4.png", "broken.png"]
    assert lines[-1]["status"] == 400 and lines[-1]["error"]["code"] == "corrupt_image"
    assert run.returncode == 1  # one file failed
    client = create_app(load_bundle(bundle), NO_POLL).test_client()
    for line, i in zip(lines, range(5)):
        api = client.post("/predict", data=on_paper(images[i]), content_type="image/png").get_json()
        # the same answer as the API, field for field; the id too, but signed by another process's key
        assert {k: line[k] for k in api if k != "id"} == {k: v for k, v in api.items() if k != "id"} and line["id"]
    plain = subprocess.run([sys.executable, "-m", "serve", "predict", str(tmp_path / "0.png")], cwd=ROOT,
                           env=server_env(bundle), capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0 and plain.stdout.startswith(f"{tmp_path / '0.png'}: {lines[0]['prediction']}  (")


def test_the_real_gunicorn_server_answers_over_http_and_drains_on_sigterm(bundle, digits):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "serve", "--port", str(port)], cwd=ROOT,
                              env=server_env(bundle, WORKERS="2", THREADS="2"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base)
        images, labels = digits
        for i in range(6):  # several requests: both workers answer, the metrics add them up
            status, body = fetch(base + "/predict", on_paper(images[i]))
            assert status == 200 and json.loads(body)["model"] == "digits@3"
        status, body = fetch(base + "/predict", b"<svg/>")
        assert status == 415 and json.loads(body)["error"]["code"] == "unsupported_type"
        status, body = fetch(base + "/metrics")
        total = sum(float(line.split()[-1]) for line in body.decode().splitlines()
                    if line.startswith('digits_http_requests_total{method="POST",route="/predict",status="200"}'))
        assert total == 6
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=30)[0]
    assert server.returncode == 0, output
    assert re.search(r"\"POST /predict HTTP/1.1\" 200 \d+ [\d.]+ms id=[0-9a-f]{32} model=digits@3 prediction=", output)  # the access log


def test_gunicorn_without_a_model_exits_with_a_clear_message(tmp_path):
    env = server_env(tmp_path / "no-bundle-here", WORKERS="1")
    run = subprocess.run([sys.executable, "-m", "serve", "--port", str(free_port())], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "does not hold a model bundle" in run.stdout + run.stderr
