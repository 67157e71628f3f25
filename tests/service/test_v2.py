"""The Open Inference Protocol (KServe v2) routes, serve/v2.py: Triton's own Python client against the real
gunicorn server (one for the module), its answers checked against POST /predict's for the same images;
then every way a request can be wrong, through Flask's test client."""
import base64
import json
import re
import struct

import jsonschema
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from digits.contract import to_input
from serve import create_app
from serve.config import Settings
from testkit.images import on_paper, png_bytes as png
from testkit.server import fetch, free_port, server_env, start_server, stop_server

OUTPUTS = ("probabilities", "prediction", "confidence")
INFER = "/v2/models/digits/infer"


@pytest.fixture(scope="module")
def server(bundle):
    """The real server (gunicorn, one worker) serving the test champion, digits@3: its host:port."""
    port = free_port()
    process = start_server(port, server_env(bundle), workers=1)
    yield f"127.0.0.1:{port}"
    stop_server(process)


@pytest.fixture(scope="module")
def tc(server):
    """tritonclient's HTTP client of that server."""
    client = triton.InferenceServerClient(server)
    yield client
    client.close()


@pytest.fixture(scope="module")
def images(digits):
    """(encoded images, labels): MNIST digits as 28x28 PNGs (the model's input as it is) and written dark on
    a white page (the whole normalise path), 10 of each."""
    x, y = digits
    return [png(d) for d in x[::3]] + [on_paper(d) for d in x[1::3]], np.concatenate([y[::3], y[1::3]]).astype(int)


def predicted(server, data):
    """POST /predict's answer for one image."""
    status, body = fetch(f"http://{server}/predict", data)
    assert status == 200, body
    return json.loads(body)


def infer(client, inputs, binary):
    return client.infer("digits", inputs, request_id="req-7",
                        outputs=[triton.InferRequestedOutput(name, binary_data=binary) for name in OUTPUTS])


def test_tritonclient_sees_a_live_ready_server_and_the_models_metadata(tc):
    client = tc
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits") and client.is_model_ready("digits", "3")
    assert not client.is_model_ready("digits", "4") and not client.is_model_ready("mnist")
    assert client.get_server_metadata() == {"name": "digits", "version": "1.0.0", "extensions": ["binary_tensor_data"]}
    metadata = client.get_model_metadata("digits")
    assert metadata == client.get_model_metadata("digits", "3")
    assert (metadata["name"], metadata["versions"], metadata["platform"]) == ("digits", ["3"], "onnxruntime_onnx")
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
        ("images", "BYTES", [-1]), ("pixels", "FP32", [-1, 28, 28, 1])]
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["outputs"]] == [
        ("probabilities", "FP32", [-1, 11]), ("prediction", "INT64", [-1]), ("confidence", "FP32", [-1])]
    with pytest.raises(InferenceServerException, match="unknown model 'mnist'") as error:
        client.get_model_metadata("mnist")
    assert error.value.status() == "404"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_bytes_images_answer_what_predict_answers(server, tc, images, binary):
    """tritonclient sends BYTES elements raw in the binary extension, and as the strings it is given in JSON
    (base64 here: an encoded image is no UTF-8 text). Same digits, same confidences as POST /predict."""
    files, labels = images
    tensor = triton.InferInput("images", [len(files)], "BYTES")
    elements = files if binary else [base64.b64encode(f).decode() for f in files]
    tensor.set_data_from_numpy(np.array(elements, dtype=np.object_), binary_data=binary)
    result = infer(tc, [tensor], binary)
    response = result.get_response()
    assert response["id"] == "req-7" and response["model_name"] == "digits" and response["model_version"] == "3"
    assert all(("data" in o) != binary for o in response["outputs"])  # as asked: binary or JSON, per output
    probabilities, prediction = result.as_numpy("probabilities"), result.as_numpy("prediction")
    confidence = result.as_numpy("confidence")
    assert probabilities.shape == (len(files), 11) and probabilities.dtype == np.float32
    assert prediction.dtype == np.int64 and confidence.dtype == np.float32
    assert np.mean(prediction == labels) >= 0.8  # a real model reading real digits
    for data, p, digit, sure in zip(files, probabilities, prediction, confidence):
        expected = predicted(server, data)
        assert digit == (-1 if expected["prediction"] is None else expected["prediction"])
        assert sure == pytest.approx(expected["confidence"], abs=1e-6)
        assert p[:10] == pytest.approx(expected["probabilities"], abs=1e-5)
        assert p[10] == pytest.approx(expected["not_a_digit"], abs=1e-5)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_an_fp32_tensor_goes_straight_to_the_model(tc, digits, binary):
    """MNIST's own 28x28s as the model contract's floats: the same answers as the same digits sent as PNGs
    (a 28x28 digit upload passes normalise unchanged), in one request with all outputs by default."""
    x, y = digits
    tensor = triton.InferInput("pixels", [len(x), 28, 28, 1], "FP32")
    tensor.set_data_from_numpy(to_input(x), binary_data=binary)
    client = tc
    result = client.infer("digits", [tensor], model_version="3")  # no outputs named: all, binary (tritonclient)
    assert [o["name"] for o in result.get_response()["outputs"]] == list(OUTPUTS)
    assert "id" not in result.get_response()
    as_png = triton.InferInput("images", [len(x)], "BYTES")
    as_png.set_data_from_numpy(np.array([png(d) for d in x], dtype=np.object_))
    expected = client.infer("digits", [as_png])
    assert (result.as_numpy("prediction") == expected.as_numpy("prediction")).all()
    assert np.allclose(result.as_numpy("probabilities"), expected.as_numpy("probabilities"), atol=1e-6)
    assert np.mean(result.as_numpy("prediction") == y) >= 0.8


def test_only_the_outputs_asked_for_come_back(tc, images):
    client = tc
    tensor = triton.InferInput("images", [2], "BYTES")
    tensor.set_data_from_numpy(np.array(images[0][:2], dtype=np.object_))
    result = client.infer("digits", [tensor], outputs=[triton.InferRequestedOutput("prediction", binary_data=False)])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["prediction"]
    assert result.as_numpy("probabilities") is None and result.as_numpy("prediction").shape == (2,)


def test_tritonclient_gets_a_bad_image_as_a_400_that_names_it(tc, images):
    tensor = triton.InferInput("images", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([images[0][0], b"not an image"], dtype=np.object_))
    with pytest.raises(InferenceServerException, match=r"images\[1\]: the upload is not an image") as error:
        tc.infer("digits", [tensor])
    assert error.value.status() == "400"


# Flask's test client from here on: the errors, the document, the batch in one model call.

def request(name="images", datatype="BYTES", shape=(1,), data=None, **extra):
    tensor = {"name": name, "datatype": datatype, "shape": list(shape)}
    if data is not None:
        tensor["data"] = data
    return {"inputs": [tensor], **extra}


def pixels(values, n=1):
    return request("pixels", "FP32", (n, 28, 28, 1), values)


def protocol_error(response, status):
    """The protocol's error: {"error": "<message>"} and nothing else."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    return body["error"]


def binary_body(payload, raw):
    head = json.dumps(payload).encode()
    return {"data": head + raw, "headers": {"Inference-Header-Content-Length": str(len(head))}}


STROKE = base64.b64encode(png(np.pad(np.full((20, 4), 255, np.uint8), 4))).decode()  # a real PNG: a "1"


@pytest.mark.parametrize("body, message", [
    (request(datatype="FP32", data=[0.5]), "input images is BYTES, not 'FP32'"),
    (request("pixels", "BYTES", (1, 28, 28, 1), ["x"]), "input pixels is FP32, not 'BYTES'"),
    (request(shape=(1, 1), data=[STROKE]), r"shape \[1, 1\]: it takes \[N\]"),
    (request("pixels", "FP32", (1, 28, 28), [0.5] * 784), r"it takes \[N, 28, 28, 1\]"),
    (request(shape=(0,), data=[]), "holds no image"),
    (request(shape=(3,), data=[STROKE] * 3), "3 images in one request, the limit is 2"),
    (request(data=["%%% not base64"]), r"images\[0\]: the image field is not valid base64"),
    (request(shape=(2,), data=[STROKE, base64.b64encode(b"GIF89a nothing").decode()]), r"images\[1\]: "),
    (request(data=[base64.b64encode(b"%PDF-1.4").decode()]), r"images\[0\]: PDF is not supported"),
    (request(shape=(2,), data=[STROKE]), "its shape says 2 elements, its data holds 1"),
    (request(data=[7]), "holds 7, not a string"),
    (request(data=STROKE), "needs `data` \\(a list\\)"),
    (request(), "needs `data`"),
    (pixels([1.5] * 784), r"values lie in \[0, 1\].*from 1.5 to 1.5"),
    (pixels([-0.1] + [0.0] * 783), r"values lie in \[0, 1\]"),
    (pixels([True] * 784), "holds true, not a number"),
    (pixels(["0.5"] * 784), 'holds "0.5", not a number'),
    (pixels([10 ** 400] * 784), "far outside"),
    (pixels([0.5] * 783), "its shape says 784 elements, its data holds 783"),
    (pixels([[[[0.5]]]] * 785), "its data holds more"),
    ({"inputs": []}, "exactly one tensor"),
    ({"inputs": [request()["inputs"][0]] * 2}, "exactly one tensor"),
    ({"inputs": "x"}, "exactly one tensor"),
    (request("image", data=[STROKE]), "unknown input 'image'"),
    (request(data=[STROKE], outputs=[{"name": "logits"}]), "unknown output 'logits'"),
    (request(data=[STROKE], outputs=[{"name": {}}]), "unknown output {}"),  # found by schemathesis: once a 500
    ({"inputs": [{"name": ["images"], "datatype": "BYTES", "shape": [1], "data": [STROKE]}]}, r"unknown input \["),
    (request(data=[STROKE], outputs=[{"name": "prediction"}] * 2), "asked for twice"),
    (request(data=[STROKE], outputs=None), "`outputs` must be a list"),
    (request(data=[STROKE], outputs=[{"name": "prediction", "parameters": {"classification": 3}}]), "classification"),
    (request(data=[STROKE], outputs=[{"name": "prediction", "parameters": {"binary_data": "yes"}}]), "true or false"),
    (request(data=[STROKE], parameters={"binary_data_output": 1}), "`binary_data_output` must be true or false"),
    (request(data=[STROKE], parameters=[]), "`parameters` of the request must be a JSON object"),
    (request(data=[STROKE], id=7), "`id` must be a string"),
    ([1, 2], "must be an inference request"),
])
def test_every_bad_request_is_a_400_in_the_protocols_form(champion, body, message):
    client = create_app(champion, Settings(model_poll_seconds=0, max_batch_images=2)).test_client()
    assert re.search(message, protocol_error(client.post(INFER, json=body), 400))


def test_bad_binary_data_and_bad_bodies_are_400s_too(client):
    good = binary_body(binary_input(8), struct.pack("<I", 4) + b"abcd")  # well framed, but no image
    assert re.search(r"images\[0\]: the upload is not an image", protocol_error(client.post(INFER, **good), 400))
    cases = [
        (binary_body(request(shape=(1,), data=[STROKE]), b"xx"), "2 bytes follow the JSON header but input images "
                                                                 "has no binary_data_size"),
        (binary_body(binary_input(9), struct.pack("<I", 4) + b"abcd"), "binary_data_size is 9, but 8 bytes follow"),
        (binary_body(binary_input(6), struct.pack("<I", 4) + b"ab"), "element 0 says 4 bytes, 2 are left"),
        (binary_body(binary_input(3), b"abc"), "ends inside an element's 4-byte length"),
        (binary_body(binary_input(16), (struct.pack("<I", 4) + b"abcd") * 2), "its binary data holds more"),
        (binary_body(binary_input(8, data=[]), struct.pack("<I", 4) + b"abcd"), "both `data` and binary_data_size"),
        (binary_body(binary_input(12, "pixels"), bytes(12)), "are 3136 bytes, its binary data 12"),
        (binary_body(binary_input(3136, "pixels"), np.full(784, np.nan, "<f4").tobytes()), "NaN or infinity"),
        ({"data": b'{"inputs": [}', "headers": {}}, "the body is not valid JSON"),
        ({"data": b"\xff\xfe", "headers": {}}, "the body is not valid JSON"),
        ({"data": b"[" * 100_000, "headers": {}}, "nested too deeply|not valid JSON"),
        ({"data": b"{}", "headers": {"Inference-Header-Content-Length": "3"}}, "must be the length of the JSON"),
        ({"data": b"{}", "headers": {"Inference-Header-Content-Length": "-1"}}, "must be the length of the JSON"),
        ({"data": b"{}", "headers": {"Content-Encoding": "gzip"}}, "Content-Encoding 'gzip' is not taken"),
    ]
    for kwargs, message in cases:
        assert re.search(message, protocol_error(client.post(INFER, **kwargs), 400)), message
    nan = json.dumps(pixels([0.5] * 783 + [float("nan")]))  # Python's json writes (and reads) NaN
    assert "NaN or infinity" in protocol_error(client.post(INFER, data=nan), 400)


def binary_input(size, name="images", n=1, **extra):
    """An inference request whose one input comes in the binary extension: `size` bytes after the JSON."""
    datatype, shape = ("BYTES", [n]) if name == "images" else ("FP32", [n, 28, 28, 1])
    return {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size},
                        **extra}]}


def test_other_models_versions_paths_and_methods_are_protocol_errors(client):
    assert "unknown model 'mnist'" in protocol_error(client.get("/v2/models/mnist"), 404)
    assert "version '4' is not served: version 3 is" in protocol_error(client.get("/v2/models/digits/versions/4"), 404)
    assert protocol_error(client.post("/v2/models/digits/versions/4/infer", json=request(data=[STROKE])), 404)
    assert protocol_error(client.get("/v2/models/mnist/ready"), 404)
    assert protocol_error(client.get("/v2/repository/index"), 404)  # an extension this server does not have
    response = client.get(INFER)
    assert protocol_error(response, 405) and response.headers["Allow"] == "POST"
    assert client.get("/nowhere").get_json()["error"]["code"] == "not_found"  # the house form outside /v2


def test_a_body_over_the_upload_limit_is_a_413(champion):
    client = create_app(champion, Settings(model_poll_seconds=0, max_upload_bytes=1000)).test_client()
    assert protocol_error(client.post(INFER, json=pixels([0.5] * 784)), 413)


def test_a_batch_is_one_model_call_and_a_blank_is_minus_one(champion, images, monkeypatch):
    calls = []
    calibrated = champion.calibrated
    monkeypatch.setattr(champion, "calibrated", lambda batch: calls.append(len(batch)) or calibrated(batch))
    client = create_app(champion, Settings(model_poll_seconds=0)).test_client()
    files = [*images[0][:5], png(np.zeros((28, 28), np.uint8))]  # five digits, then an empty square
    body = client.post(INFER, json=request(shape=(6,), data=[base64.b64encode(f).decode() for f in files], id="x"))
    assert calls == [6]
    body, calls[:] = body.get_json(), []
    outputs = {o["name"]: o for o in body["outputs"]}
    assert body["id"] == "x" and body["parameters"] == {"model": "digits@3"}
    expected = [client.post("/predict", data=f, content_type="image/png").get_json()["prediction"] for f in files]
    assert outputs["prediction"]["data"] == [-1 if p is None else p for p in expected] and expected[5] is None
    assert outputs["confidence"]["data"][5] == 0.0 and outputs["probabilities"]["shape"] == [6, 11]
    blank = client.post(INFER, json=pixels([[0.0] * 28] * 28)).get_json()  # nested data is row-major too
    assert {o["name"]: o["data"] for o in blank["outputs"]}["prediction"] == [-1]


def test_the_document_describes_the_v2_answers(client, images):
    spec = client.get("/openapi.json").get_json()
    v2_routes = {r.rule.replace("<", "{").replace(">", "}") for r in client.application.url_map.iter_rules()
                 if r.rule.startswith("/v2")}
    assert v2_routes == {p for p in spec["paths"] if p.startswith("/v2")} and len(v2_routes) == 9

    def valid(path, method, status, response):
        schema = spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
        jsonschema.validate(response.get_json(), {**schema, "components": spec["components"]})

    for path, url in (("/v2", "/v2"), ("/v2/health/live", "/v2/health/live"),
                      ("/v2/models/{name}", "/v2/models/digits"),
                      ("/v2/models/{name}/versions/{version}/ready", "/v2/models/digits/versions/3/ready")):
        valid(path, "get", "200", client.get(url))
    valid("/v2/models/{name}", "get", "404", client.get("/v2/models/mnist"))
    example = spec["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]["application/json"]["example"]
    answer = client.post(INFER, json=example)
    valid("/v2/models/{name}/infer", "post", "200", answer)
    assert {o["name"]: o["data"] for o in answer.get_json()["outputs"]}["prediction"] == [7]
    valid("/v2/models/{name}/infer", "post", "400", client.post(INFER, json={"inputs": []}))
