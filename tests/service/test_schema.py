"""The API against its OpenAPI document: what schema fuzzing found, pinned in process, and schemathesis
itself against the real gunicorn server (benchmarks/schema_fuzz.py, the one code path: here at 10
examples per operation, in docs/security.md at full size)."""
import base64
import io
import re
import subprocess
import sys

import jsonschema
import pytest

from testkit import ROOT
from testkit.images import on_paper
from testkit.server import server_env


def error_code(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()["error"]["code"]


def test_a_405_names_the_allowed_methods(client):  # noqa: F811
    for method, path in (("TRACE", "/health"), ("PUT", "/predict"), ("DELETE", "/predict/batch")):
        response = client.open(path, method=method)
        assert error_code(response, 405) == "method_not_allowed"
        assert response.mimetype == "application/json"
        allowed = {m.strip() for m in response.headers["Allow"].split(",")}  # RFC 9110: a 405 must say
        assert allowed == ({"GET", "HEAD"} if path == "/health" else {"POST"})  # no OPTIONS: no automatic answers


@pytest.mark.parametrize("query, status", [
    ("", 200), ("?debug=0", 200), ("?debug=1", 200), ("?debug=true", 200), ("?debug=false", 200),
    ("?debug=null", 400), ("?debug=yes", 400), ("?debug=", 400), ("?debug=1&debug=1", 400)])
def test_debug_takes_only_the_documented_values(client, digits, query, status):  # noqa: F811
    data = on_paper(digits[0][0])
    for route in ("/predict", "/read"):
        response = client.post(route + query, data=data, content_type="image/png")
        assert response.status_code == status, response.get_data(as_text=True)
        if status == 400:
            assert response.get_json()["error"]["code"] == "bad_parameter"
        elif route == "/predict":
            assert ("input" in response.get_json()) == (query in ("?debug=1", "?debug=true"))
    batch = client.post("/predict/batch" + query, data={"images": [(io.BytesIO(data), "a.png")]})
    assert batch.status_code == status


def test_multipart_takes_exactly_the_documented_fields(client, digits):  # noqa: F811
    data = on_paper(digits[0][0])

    def part(name="a.png"):
        return io.BytesIO(data), name

    assert client.post("/predict", data={"image": part()}).status_code == 200
    assert client.post("/predict", data={"file": part()}).status_code == 200
    assert client.post("/read", data={"file": part()}).status_code == 200
    for route in ("/predict", "/read"):
        assert error_code(client.post(route, data={"image": part(), "file": part()}), 400) == "bad_request"
        assert error_code(client.post(route, data={"image": part(), "note": "hi"}), 400) == "bad_request"
        assert error_code(client.post(route, data={"image": part(), "extra": part()}), 400) == "bad_request"
    assert error_code(client.post("/predict/batch", data={"images": [part()], "x": "y"}), 400) == "bad_request"
    assert client.post("/predict/batch", data={"images": [part(), part()]}).status_code == 200


def test_the_document_says_what_the_app_enforces(client):  # noqa: F811
    spec = client.get("/openapi.json").get_json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    multipart = body["multipart/form-data"]["schema"]
    valid = jsonschema.Draft202012Validator(multipart).is_valid
    assert valid({"image": "x"}) and valid({"file": "x"})
    assert not valid({}) and not valid({"image": "x", "file": "x"}) and not valid({"image": "x", "note": "y"})
    batch = spec["paths"]["/predict/batch"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert not jsonschema.Draft202012Validator(batch).is_valid({"images": []})
    image = jsonschema.Draft202012Validator(body["application/json"]["schema"]).is_valid
    for text in ("aGk=", "aGkh", "data:image/png;base64,aGk=", "data:,aGk="):
        assert image({"image": text}) and base64.b64decode(text.partition(",")[2] or text, validate=True)
    for text in ("", "%%%", "aGk", "aG k=", "data:image/png;base64"):
        assert not image({"image": text})
        assert client.post("/predict", json={"image": text}).status_code == 400
    debug = spec["paths"]["/predict"]["post"]["parameters"][0]["schema"]["enum"]
    assert sorted(debug) == ["0", "1", "false", "true"]


def test_the_documents_example_is_a_seven_the_api_reads(client):  # noqa: F811
    spec = client.get("/openapi.json").get_json()
    example = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["example"]
    assert client.post("/predict", json=example).get_json()["prediction"] == 7


def test_the_real_server_keeps_every_promise_of_its_openapi_document(bundle):  # noqa: F811
    run = subprocess.run([sys.executable, "benchmarks/schema_fuzz.py", "--examples", "10", "--workers", "1"],
                         cwd=ROOT, env=server_env(bundle), capture_output=True, text=True, timeout=240)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-8000:]
    assert "No issues found" in output and "0 tracebacks in the server log" in output
    for phase in ("Examples", "Coverage", "Fuzzing"):  # each phase ran, none was skipped
        assert re.search(rf"✅ {phase}\n", output), output[-3000:]
    generated = int(re.search(r"(\d+) generated, (\d+) passed", output).group(1))
    requests = int(re.search(r"schema_fuzz: (\d+) requests", output).group(1))
    assert generated >= 150 and requests >= generated, output[-3000:]
