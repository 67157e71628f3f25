"""Security properties of the served API (docs/security.md): every limit enforced where the other tests
do not already show it, uploads never on disk, no debug mode and no tracebacks, no CORS, no unpickling
of anything a user sends. In process where that shows it, on the real gunicorn server where only
gunicorn can (request line and header limits, chunked bodies)."""
import io
import json
import re
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import werkzeug.formparser
from flask import Flask, request
from PIL import Image

import serve.routes
from serve import create_app
from serve.config import Settings
from testkit import ROOT
from testkit.images import on_paper
from testkit.server import free_port, server_env, wait_until_ready

NO_POLL = Settings(model_poll_seconds=0)


def error_code(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()["error"]["code"]


@pytest.fixture(scope="module")
def big_png():
    """A real PNG over 1 MB (noise does not compress): twice werkzeug's 500 kB spool-to-disk threshold."""
    data = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1100, 1100), np.uint8)).save(data, format="PNG")
    assert len(data.getvalue()) > 1_000_000
    return data.getvalue()


def test_multipart_uploads_are_never_written_to_disk(champion, big_png, monkeypatch):  # noqa: F811
    opened = []  # every temporary file werkzeug's form parser opens, and every spill of one onto the disk
    spooled, on_disk = tempfile.SpooledTemporaryFile, tempfile.TemporaryFile
    monkeypatch.setattr(werkzeug.formparser, "SpooledTemporaryFile",
                        lambda *a, **k: opened.append("spooled") or spooled(*a, **k))
    monkeypatch.setattr(tempfile, "TemporaryFile", lambda *a, **k: opened.append("disk") or on_disk(*a, **k))

    def multipart(name, *files):  # encoded here, so the test client itself buffers nothing in a temporary file
        boundary, form = multipart_body(name, *files)
        return {"data": form, "content_type": f"multipart/form-data; boundary={boundary}"}

    client = create_app(champion, NO_POLL).test_client()
    answer = client.post("/predict", **multipart("image", big_png))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    batch = client.post("/predict/batch", **multipart("images", big_png, big_png, big_png))
    assert batch.status_code == 200 and len(batch.get_json()["results"]) == 3
    assert opened == []
    # The control: the same upload through werkzeug's default request class is spooled onto the disk.
    plain = Flask("plain")
    plain.post("/")(lambda: str(len(request.files["image"].read())))
    assert plain.test_client().post("/", **multipart("image", big_png)).get_data() == str(len(big_png)).encode()
    assert opened == ["spooled", "disk"]


def multipart_body(name, *files):
    boundary = "digits-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{i}.png"\r\n'
             f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n" for i, data in enumerate(files)]
    return boundary, b"".join(parts) + f"--{boundary}--\r\n".encode()


def test_an_unexpected_error_is_a_json_500_without_a_traceback(champion, digits, monkeypatch):  # noqa: F811
    monkeypatch.setenv("FLASK_DEBUG", "1")  # even so: the factory never turns debug on
    app = create_app(champion, NO_POLL)
    assert app.debug is False and app.testing is False and not app.config["PROPAGATE_EXCEPTIONS"]

    def broken(gray):
        raise RuntimeError("secret detail from /etc/digits/config line 3")

    monkeypatch.setattr(serve.routes, "normalise", broken)
    response = app.test_client().post("/predict", data=on_paper(digits[0][0]), content_type="image/png")
    assert error_code(response, 500) == "internal_server_error"
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and "secret" not in text and "RuntimeError" not in text and "File " not in text
    debugger = app.test_client().get("/?__debugger__=yes&cmd=resource&f=debugger.js")  # werkzeug's console
    assert debugger.mimetype == "text/html" and b"EVALEX" not in debugger.data and b"CONSOLE_MODE" not in debugger.data


def test_form_limits_are_enforced_as_json_413s(champion, digits):  # noqa: F811
    app = create_app(champion, Settings(model_poll_seconds=0, max_upload_bytes=3_000_000))
    # Flask's defaults, relied on and stated in docs/security.md: a change in a Flask upgrade fails here.
    assert app.config["MAX_FORM_PARTS"] == 1000 and app.config["MAX_FORM_MEMORY_SIZE"] == 500_000
    client, png = app.test_client(), on_paper(digits[0][0])
    many = {"images": [(io.BytesIO(b"x"), f"{i}.png") for i in range(1001)]}  # 1001 parts, ~200 kB in all
    assert error_code(client.post("/predict/batch", data=many), 413) == "request_entity_too_large"
    big_field = {"image": (io.BytesIO(png), "a.png"), "note": "x" * 600_000}  # a 600 kB text part
    assert error_code(client.post("/predict", data=big_field), 413) == "request_entity_too_large"
    over = {"image": (io.BytesIO(b"\0" * 3_100_000), "big.png")}  # a multipart body over MAX_UPLOAD_BYTES
    assert error_code(client.post("/predict", data=over), 413) == "request_entity_too_large"
    batch = {"images": [(io.BytesIO(png), f"{i}.png") for i in range(65)]}  # the default MAX_BATCH_IMAGES is 64
    assert error_code(client.post("/predict/batch", data=batch), 413) == "too_many_images"


def test_no_cors_headers_same_origin_only(champion, digits):  # noqa: F811
    client, origin = create_app(champion, NO_POLL).test_client(), {"Origin": "https://elsewhere.example"}
    answers = [client.get(path, headers=origin) for path in ("/", "/health", "/model", "/openapi.json", "/nowhere")]
    answers.append(client.post("/predict", data=on_paper(digits[0][0]), content_type="image/png", headers=origin))
    answers.append(client.options("/predict", headers={**origin, "Access-Control-Request-Method": "POST"}))
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 404, 200, 405]  # no preflight answered
    for answer in answers:
        assert not [h for h in answer.headers.keys() if h.lower().startswith("access-control-")]


def test_no_user_data_is_ever_unpickled():
    """Serving reads images with Pillow, JSON with json, the model as ONNX protobuf (onnxruntime): no pickle,
    no numpy pickle, no joblib, no MLflow pyfunc model loaded (digits/pyfunc.py is the model MLflow's own tools
    load, `mlflow models serve`; the server never imports it). The only pickle anywhere is MNIST's training file,
    read by pipeline/download.py's NumpyOnlyUnpickler (tests/unit/test_download.py feeds it an exploit)."""
    unsafe = re.compile(r"\b(import pickle|pickle\.loads?|Unpickler|allow_pickle\s*=\s*True|joblib|cloudpickle|"
                        r"dill|pyfunc\.load_model|torch\.load|yaml\.load\(|(?<![\w.])eval\(|(?<![\w.])exec\()")
    serving = {p.name: unsafe.findall(p.read_text())
               for folder in ("serve", "digits") for p in (ROOT / folder).glob("*.py")}
    assert {name: found for name, found in serving.items() if found} == {}
    assert not [p.name for p in (ROOT / "serve").glob("*.py") if "digits.pyfunc" in p.read_text()
                or "from digits import pyfunc" in p.read_text()]
    pipeline = {p.name: unsafe.findall(p.read_text()) for p in (ROOT / "pipeline").glob("*.py")}
    assert {name: found for name, found in pipeline.items() if found} == {
        "download.py": ["import pickle", "Unpickler"]}  # class NumpyOnlyUnpickler(pickle.Unpickler)
    assert "NumpyOnlyUnpickler(f, " in (ROOT / "pipeline" / "download.py").read_text()


def test_gunicorn_settings_are_the_documented_ones(monkeypatch):
    from gunicorn.config import Config

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # the config sets it: restored after this test
    config, settings = Config(), runpy.run_path(str(ROOT / "serve" / "gunicorn.conf.py"))
    shutil.rmtree(settings["metrics_dir"])
    for key, value in settings.items():
        if key in config.settings:
            config.set(key, value)
    assert (config.timeout, config.graceful_timeout, config.keepalive) == (30, 20, 5)
    assert (config.limit_request_line, config.limit_request_fields, config.limit_request_field_size) == (4094, 100, 8190)
    assert config.reload is False and config.http_protocols == ["h1"] and config.worker_class_str == "gthread"


# --- the real server: what only gunicorn can show ----------------------------------------------------

@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):  # noqa: F811
    port, log = free_port(), tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "serve", "--port", str(port)], cwd=ROOT,
                                   env=server_env(bundle, WORKERS="1", THREADS="2", MAX_UPLOAD_BYTES="200000"),
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", log=log)
        yield port, log
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def exchange(port, data: bytes) -> tuple[int, dict, bytes]:
    """Send raw bytes (the request says Connection: close), read the whole answer: status, headers, body."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(data)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def get(path, *headers):
    return "\r\n".join([f"GET {path} HTTP/1.1", "Host: x", "Connection: close", *headers, "", ""]).encode()


def test_gunicorn_refuses_over_long_request_lines_and_headers_itself(server):
    port, log = server
    assert exchange(port, get("/health?" + "a" * 4000))[0] == 200  # under the 4094-byte line
    status, headers, body = exchange(port, get("/health?" + "a" * 4100))
    assert status == 400 and headers["content-type"] == "text/html" and b"Request Line is too large" in body
    status, headers, body = exchange(port, get("/health", *[f"X-{i}: y" for i in range(101)]))
    assert status == 431 and headers["content-type"] == "text/html" and b"limit request headers fields" in body
    status, headers, body = exchange(port, get("/health", "X-Big: " + "a" * 8200))
    assert status == 431 and headers["content-type"] == "text/html" and b"fields size" in body
    assert exchange(port, get("/health", "X-Big: " + "a" * 8000))[0] == 200
    assert "Traceback" not in log.read_text()


def test_the_upload_limit_holds_for_any_framing(server, digits):
    port, _ = server
    def post(headers, body=b""):
        return exchange(port, "\r\n".join(["POST /predict HTTP/1.1", "Host: x", "Connection: close", *headers,
                                           "", ""]).encode() + body)

    status, headers, body = post(["Content-Type: image/png", "Content-Length: 1000000000"])  # no body sent
    assert status == 413 and headers["content-type"] == "application/json" and b"request_entity_too_large" in body

    def chunked(data):
        return b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + 50_000]), data[i:i + 50_000])
                        for i in range(0, len(data), 50_000)) + b"0\r\n\r\n"

    for content_type, data in (("image/png", b"\0" * 300_000),
                               ("application/json", b'{"image": "' + b"A" * 300_000 + b'"}')):
        status, _, body = post([f"Content-Type: {content_type}", "Transfer-Encoding: chunked"], chunked(data))
        assert status == 413 and b"request_entity_too_large" in body, body
    boundary, form = multipart_body("image", b"\0" * 300_000)
    status, _, body = post([f"Content-Type: multipart/form-data; boundary={boundary}", "Transfer-Encoding: chunked"],
                           chunked(form))
    assert status == 413 and b"request_entity_too_large" in body
    png = on_paper(digits[0][0])  # under the limit, chunked: answered
    status, _, body = post(["Content-Type: image/png", "Transfer-Encoding: chunked"], chunked(png))
    assert status == 200 and b'"prediction"' in body


def test_the_real_server_sends_no_cors_headers_and_no_version(server):
    port, _ = server
    status, headers, _ = exchange(port, "\r\n".join(["OPTIONS /predict HTTP/1.1", "Host: x", "Connection: close",
                                                     "Origin: https://elsewhere.example",
                                                     "Access-Control-Request-Method: POST", "", ""]).encode())
    assert status == 405 and not [h for h in headers if h.startswith("access-control-")]
    assert headers["server"] == "gunicorn"  # no version number to look up exploits by


def test_the_audit_fails_on_a_vulnerability_and_only_warns_when_the_service_cannot_answer(monkeypatch, tmp_path,
                                                                                         capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("audit", ROOT / ".ci" / "audit.py")
    audit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(audit)
    monkeypatch.setattr(audit, "IGNORE_FILE", tmp_path / "ignore.txt")
    calls = []

    def pip_audit(report):  # stands in for `python -m pip_audit ... --output FILE`
        def run(command, **kwargs):
            calls.append(command)
            ignore = {command[i + 1] for i, a in enumerate(command) if a == "--ignore-vuln"}
            if report is not None:  # like pip-audit: an ignored id is left out of the report
                kept = [{**d, "vulns": [v for v in d["vulns"] if v["id"] not in ignore]} if "vulns" in d else d
                        for d in report]
                Path(command[command.index("--output") + 1]).write_text(json.dumps({"dependencies": kept}))
            return subprocess.CompletedProcess(command, 1, "", "ConnectionError: the service is down")
        return run

    vulnerable = [{"name": "flask", "version": "0.1", "vulns": [{"id": "GHSA-x", "fix_versions": ["3.1.3"]}]},
                  {"name": "numpy", "version": "2.4.6", "vulns": []}]
    monkeypatch.setattr(audit.subprocess, "run", pip_audit(vulnerable))
    assert audit.main() == 1 and "VULNERABLE flask 0.1: GHSA-x" in capsys.readouterr().out
    (tmp_path / "ignore.txt").write_text("# accepted\nGHSA-x  # not reachable here: we never call it\n")
    assert audit.main() == 0 and calls[-1][-2:] == ["--ignore-vuln", "GHSA-x"]
    monkeypatch.setattr(audit.subprocess, "run", pip_audit(None))  # the service is unreachable: no report
    assert audit.main() == 0 and "NOT AUDITED" in capsys.readouterr().out
    monkeypatch.setattr(audit.subprocess, "run", pip_audit([{"name": "numpy", "skip_reason": "not found"}]))
    assert audit.main() == 0 and "NOT AUDITED" in capsys.readouterr().out
    (tmp_path / "ignore.txt").write_text("GHSA-y\n")  # an ignore without its reason is refused
    with pytest.raises(SystemExit, match="without a reason"):
        audit.main()


def test_a_registry_password_never_reaches_an_answer(champion, monkeypatch):  # noqa: F811
    from serve.model import Registry

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    registry = Registry(tracking_uri="http://alice:s3cret-token@127.0.0.1:9/")  # nothing listens on port 9
    app = create_app(champion, NO_POLL, registry=registry)
    assert app.serving.refresh() == "refused" and "s3cret-token" in app.serving.last_error  # as logged
    client = app.test_client()
    for path in ("/ready", "/model"):
        error = client.get(path).get_json()["last_switch_error"]
        assert "http://***@127.0.0.1:9/" in error and "s3cret" not in error and "alice" not in error
