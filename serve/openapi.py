"""GET /openapi.json: the API as an OpenAPI 3.1 document, and GET /docs: the same, readable, with curl
examples. Written by hand next to the routes in serve/routes.py; tests check it against real answers."""
import base64
import html
import json
from pathlib import Path

VERSION = "1.0.0"  # the API's version: the document's, and GET /v2's (serve/v2.py)
ERROR = {"$ref": "#/components/schemas/Error"}
# What base64.b64decode(validate=True) takes (padded, no whitespace), after an optional data: URL prefix.
BASE64 = "^(data:[^,]*,)?([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
# A real MNIST 7 (the self-test's): the example body, which schemathesis' examples phase also sends.
SEVEN = "data:image/png;base64," + base64.b64encode((Path(__file__).parent / "selftest" / "7.png").read_bytes()).decode()


def image_body(extra=""):
    binary = {"type": "string", "format": "binary"}
    return {"required": True, "description": "One image: PNG, JPEG, GIF, BMP, TIFF or WebP." + extra, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {"image": binary, "file": binary},
                                           "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
                                           "description": "the image in field `image` (or `file`), and no other field"}},
        "image/*": {"schema": binary},
        "application/octet-stream": {"schema": binary},
        "application/json": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "minLength": 1, "pattern": BASE64,
                      "description": "base64, or a data: URL (what canvas.toDataURL gives)"}}},
                             "example": {"image": SEVEN}},
    }}


def errors(*statuses):
    meaning = {400: "not an image, corrupt, truncated, empty, no image sent, bad base64, a bad `debug` value",
               413: "body over MAX_UPLOAD_BYTES (or too many images in a batch)",
               415: "a format we do not take (SVG, PDF, HEIC, PSD, ...)",
               422: "decodable but unusable: no pixels, or over MAX_IMAGE_PIXELS (checked from the header)"}
    return {str(s): {"description": meaning[s], "headers": REQUEST_ID, "content": {"application/json": {"schema": ERROR}}}
            for s in statuses}


# Every answer, errors included, carries it (serve/access.py); the client may send its own.
REQUEST_ID = {"X-Request-ID": {"description": "the request's id: the client's own X-Request-ID when usable "
                               "(1-128 of A-Z a-z 0-9 . _ : / + = -), else a new one; in the access log too",
                               "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:/+=-]{1,128}$"}}}


def json_response(description, schema):
    return {"description": description, "headers": REQUEST_ID, "content": {"application/json": {"schema": schema}}}


DEBUG_VALUES = ("0", "1", "false", "true")  # serve/uploads.py refuses any other value (400 bad_parameter)
DEBUG = {"name": "debug", "in": "query", "required": False, "schema": {"type": "string", "enum": list(DEBUG_VALUES)},
         "description": "1 (or true): add `input`, the 28x28 image the model saw, as a PNG data URL"}


# The Open Inference Protocol's side (serve/v2.py answers with exactly these): tensor name -> (datatype, shape).
V2_INPUTS = {"images": ("BYTES", [-1]), "pixels": ("FP32", [-1, 28, 28, 1])}
V2_OUTPUTS = {"probabilities": ("FP32", [-1, 11]), "prediction": ("INT64", [-1]), "confidence": ("FP32", [-1])}
V2_PLATFORM = "onnxruntime_onnx"
V2_EXTENSIONS = ["binary_tensor_data"]  # Triton's: tensors as raw bytes after the JSON (tritonclient's default)
V2_ERROR = {"$ref": "#/components/schemas/ProtocolError"}
# The binary extension's request header is described with the body, not declared as a header parameter: its
# value must be the length of the JSON the body starts with, which no schema can say, and declared, schema
# fuzzing pairs every valid body with a made-up length (tests/service/test_v2.py checks the bad ones).
BINARY_BODY = ("binary tensor data extension (tritonclient's default): header Inference-Header-Content-Length: the "
               "length of the JSON inference request the body starts with; the inputs' bytes follow it")


def v2_errors(*statuses):
    meaning = {400: "a bad inference request: wrong input name, datatype or shape, over MAX_BATCH_IMAGES, "
                    "an undecodable image, a value outside [0, 1] or NaN",
               404: "another model, or a version not being served", 413: "body over MAX_UPLOAD_BYTES"}
    return {str(s): {"description": meaning[s], "headers": REQUEST_ID, "content": {"application/json": {
        "schema": V2_ERROR}}} for s in statuses}


def v2_paths(name, version) -> dict:
    """The Open Inference Protocol's routes (serve/v2.py), the served model's name and version as their only
    path values."""
    def path(parameter, value):
        return {"name": parameter, "in": "path", "required": True, "schema": {"type": "string", "enum": [value]}}

    def obj(required=(), **properties):
        return {"type": "object", "required": list(required), "properties": properties}

    strings, binary = {"type": "array", "items": {"type": "string"}}, {"type": "string", "format": "binary"}
    tensor = obj(["name", "datatype", "shape"], name={"type": "string"}, datatype={"type": "string"},
                 shape={"type": "array", "items": {"type": "integer"}})
    metadata = obj(["name", "platform", "inputs", "outputs"], name={"const": name}, versions=strings,
                   platform={"const": V2_PLATFORM}, inputs={"type": "array", "items": tensor},
                   outputs={"type": "array", "items": tensor})
    input_tensor = {**obj(
        ["name", "datatype", "shape"], name={"enum": list(V2_INPUTS)},
        datatype={"enum": sorted({datatype for datatype, _ in V2_INPUTS.values()})},
        shape={"type": "array", "items": {"type": "integer", "minimum": 0}, "description": "images: [N]; "
               "pixels: [N, 28, 28, 1]"},
        parameters=obj(binary_data_size={"type": "integer", "minimum": 0}),
        data={"type": "array", "description": "row-major, flat or nested: images, one base64 string (or data: "
              "URL) per image; pixels, N x 784 numbers in [0, 1], white ink on black"}),
        "anyOf": [{"required": ["data"]}, {"required": ["parameters"], "properties": {
            "parameters": {"required": ["binary_data_size"]}}}]}
    output_asked = obj(["name"], name={"enum": list(V2_OUTPUTS)}, parameters=obj(binary_data={"type": "boolean"}))
    request = obj(["inputs"], id={"type": "string", "description": "echoed in the answer"},
                  parameters=obj(binary_data_output={"type": "boolean"}),
                  inputs={"type": "array", "minItems": 1, "maxItems": 1, "items": input_tensor},
                  outputs={"type": "array", "uniqueItems": True, "items": output_asked})
    output = obj(["name", "datatype", "shape"], **{**tensor["properties"], "name": {"enum": list(V2_OUTPUTS)}},
                 data={"type": "array", "items": {"type": "number"}}, parameters={"type": "object"})
    answer = obj(["model_name", "outputs"], model_name={"const": name}, model_version={"type": "string"},
                 id={"type": "string"}, outputs={"type": "array", "items": output},
                 parameters=obj(model={"type": "string", "description": "name@version that answered, as "
                                                                        "/predict's `model`"}))
    body = {"required": True, "content": {
        "application/json": {"schema": request, "example": {"id": "1", "inputs": [
            {"name": "images", "datatype": "BYTES", "shape": [1], "data": [SEVEN]}]}},
        "application/octet-stream": {"schema": {**binary, "description": BINARY_BODY}}}}
    answered = {"description": "the outputs asked for (all by default): JSON, or with binary outputs the JSON "
                               "then their bytes, its length in Inference-Header-Content-Length",
                "headers": {**REQUEST_ID, "Inference-Header-Content-Length": {"schema": {"type": "integer"}}},
                "content": {"application/json": {"schema": answer}, "application/octet-stream": {"schema": binary}}}
    paths = {
        "/v2": {"get": {"summary": "Open Inference Protocol (KServe v2): server metadata", "responses": {
            "200": json_response("name, version, extensions", obj(
                ["name", "version", "extensions"], name={"type": "string"}, version={"type": "string"},
                extensions=strings))}}},
        "/v2/health/live": {"get": {"summary": "v2: the server is live", "responses": {
            "200": json_response("live", obj(["live"], live={"const": True}))}}},
        "/v2/health/ready": {"get": {"summary": "v2: the server is ready", "responses": {
            "200": json_response("ready", obj(["ready"], ready={"const": True}))}}},
    }
    for versioned, parameters in (("", [path("name", name)]),
                                  ("/versions/{version}", [path("name", name), path("version", version)])):
        base = "/v2/models/{name}" + versioned
        paths[base] = {"get": {"summary": "v2: model metadata", "parameters": parameters, "responses": {
            "200": json_response("name, versions, platform, inputs, outputs", metadata), **v2_errors(404)}}}
        paths[base + "/ready"] = {"get": {"summary": "v2: the model is ready", "parameters": parameters,
                                          "responses": {"200": json_response("ready", obj(
                                              ["name", "ready"], name={"const": name}, ready={"const": True})),
                                                        **v2_errors(404)}}}
        paths[base + "/infer"] = {"post": {
            "summary": "v2: read a batch of digits (BYTES `images` or FP32 `pixels`) in one model call",
            "parameters": parameters, "requestBody": body,
            "responses": {"200": answered, **v2_errors(400, 404, 413)}}}
    return paths


# POST /feedback (serve/feedback.py): what it takes besides the image, the same in JSON, form fields or query.
LABEL = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9},
                   {"enum": [str(d) for d in range(10)] + ["not_a_digit", "not a digit"]}],
         "description": "what the image really is: a digit, or not a digit at all"}
FEEDBACK_FIELDS = {
    "label": LABEL,
    "id": {"type": "string", "minLength": 1, "maxLength": 4096, "pattern": "^[A-Za-z0-9_-]+$",
           "description": "the `id` of a /predict answer (instead of the image), valid FEEDBACK_ID_SECONDS"},
    "answer": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9},
                         {"enum": [str(d) for d in range(10)] + ["not_a_digit", "not a digit", "blank"]}],
               "description": "what the service answered (with an id: checked against it)"},
    "model": {"type": "string", "minLength": 1, "maxLength": 255, "description": "name@version that answered"},
    "confidence": {"type": "number", "minimum": 0, "maximum": 1, "description": "the answer's confidence"},
}


def feedback_paths() -> dict:
    binary = {"type": "string", "format": "binary"}
    form = {"type": "object", "required": ["label"], "additionalProperties": False, "maxProperties": 6,
            "properties": {**FEEDBACK_FIELDS, "image": binary, "file": binary},
            "description": "label, and the image in `image` (or `file`) or the `id` of an answer"}
    body = {"required": True, "description": "the image and ?label=..., or label and the image or id in the body",
            "content": {
                "application/json": {"schema": {**form, "properties": {**FEEDBACK_FIELDS, "image": {
                    "type": "string", "minLength": 1, "pattern": BASE64}}, "maxProperties": 5},
                    "example": {"image": SEVEN, "label": 7, "answer": 7}},
                "multipart/form-data": {"schema": form},
                "image/*": {"schema": binary}, "application/octet-stream": {"schema": binary}}}
    query = [{"name": name, "in": "query", "required": False, "schema": schema,
              "description": "with a raw image body: " + schema["description"]}
             for name, schema in FEEDBACK_FIELDS.items() if name != "id"]
    saved = {"type": "object", "required": ["id", "label", "state", "duplicate"], "properties": {
        "id": {"type": "integer", "description": "the correction's id in the store"},
        "label": {"type": "string"}, "answer": {"type": ["string", "null"]}, "model": {"type": ["string", "null"]},
        "state": {"const": "pending", "description": "until the operator accepts or rejects it"},
        "duplicate": {"type": "boolean"}}}
    counts = {"type": "object", "additionalProperties": {"type": "integer"}}
    statuses = {400: "a bad label, field or image; no image and no id; both", 404: "an id this service did not give",
                410: "an id older than FEEDBACK_ID_SECONDS", 413: "body over FEEDBACK_MAX_BYTES",
                415: "an image format we do not take", 422: "a decodable but unusable image",
                429: "over FEEDBACK_RATE corrections a minute from this address (Retry-After says when)",
                507: "FEEDBACK_MAX_PENDING corrections wait for review already"}
    return {
        "/feedback": {"post": {
            "summary": "Say what an image really is: the image, or the id of a /predict answer, and the label",
            "parameters": query, "requestBody": body,
            "responses": {"201": json_response("kept, pending review", saved),
                          "200": json_response("this upload was already corrected to this label: that one", saved),
                          **{str(s): {"description": m, "headers": REQUEST_ID, "content": {
                              "application/json": {"schema": ERROR}}} for s, m in statuses.items()}}}},
        "/feedback/stats": {"get": {"summary": "Corrections kept: counts by label, model version and state",
                                    "responses": {"200": json_response("counts", {
                                        "type": "object", "required": ["total", "by_label", "by_model", "by_state"],
                                        "properties": {"total": {"type": "integer"}, "by_label": counts,
                                                       "by_model": counts, "by_state": counts}})}}},
    }


def openapi(settings, name, version) -> dict:
    """The document; name and version: the served model's, the v2 routes' only path values."""
    probability = {"type": "number", "minimum": 0, "maximum": 1}
    prediction = {"type": "object", "required": ["prediction", "confidence", "probabilities", "not_a_digit"], "properties": {
        "prediction": {"type": ["integer", "null"], "minimum": 0, "maximum": 9,
                       "description": "null when the image is not a digit; `reason` says why"},
        "reason": {"type": "string", "enum": ["blank", "not_a_digit"],
                   "description": "only when prediction is null: no ink at all, or ink that is no digit"},
        "confidence": {**probability, "description": "calibrated probability of the most likely digit"},
        "probabilities": {"type": "array", "items": probability, "minItems": 10, "maxItems": 10,
                          "description": "calibrated, digits 0-9"},
        "not_a_digit": {**probability, "description": "calibrated probability that this is no digit at all"},
        "input": {"type": "string", "description": "only with ?debug=1"}}}
    answer_id = {"type": "string", "description": "this answer's id, for POST /feedback (a signed token, valid "
                 "FEEDBACK_ID_SECONDS)"}
    model = {"type": "string", "description": "name@version of the model that answered", "example": "digits@1"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "digits", "version": VERSION,
                 "description": "Handwritten digit recognition served from the MLflow-registered champion. "
                                f"Limits: {settings.max_upload_bytes:,} bytes per request, "
                                f"{settings.max_image_pixels:,} pixels per image, "
                                f"{settings.max_batch_images} images per batch."},
        "paths": {
            "/predict": {"post": {
                "summary": "Read one digit", "parameters": [DEBUG], "requestBody": image_body(),
                "responses": {"200": json_response("the digit", {"allOf": [prediction, {
                    "type": "object", "required": ["model", "id"], "properties": {"model": model, "id": answer_id}}]}),
                    **errors(400, 413, 415, 422)}}},
            "/predict/batch": {"post": {
                "summary": "Read many digits; a bad image is an error entry, not a failed request",
                "parameters": [DEBUG],
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["images"], "additionalProperties": False, "properties": {"images": {
                        "type": "array", "items": {"type": "string", "format": "binary"},
                        "minItems": 1, "maxItems": settings.max_batch_images}}}}}},
                "responses": {"200": json_response("one entry per image, in order", {
                    "type": "object", "required": ["results", "model"], "properties": {"model": model, "results": {
                        "type": "array", "items": {"allOf": [
                            {"type": "object", "required": ["index"], "properties": {
                                "index": {"type": "integer"}, "filename": {"type": ["string", "null"]},
                                "error": {"type": "object", "properties": {
                                    "code": {"type": "string"}, "message": {"type": "string"},
                                    "status": {"type": "integer"}}}}},
                            {"anyOf": [prediction, {"type": "object", "required": ["error"]}]}]}}}}),
                    **errors(400, 413)}}},
            "/read": {"post": {
                "summary": "Read a written number, digit by digit, left to right: the number reader over the "
                           "whole line (touching digits too), or the number cut into digits when none is served",
                "parameters": [DEBUG],
                "requestBody": image_body(),
                "responses": {"200": json_response("the number", {
                    "type": "object", "required": ["number", "digits", "model"], "properties": {
                        "number": {"type": ["string", "null"], "example": "2024",
                                   "description": "null when nothing was written or a piece is not a digit"},
                        "reason": {"type": "string", "enum": ["blank", "not_a_digit"]},
                        "model": {**model, "example": "digits-reader@1", "description": "the model(s) that read "
                                  "it: the number reader, the digit model (no reader served), or both joined by +"},
                        "digits": {"type": "array", "items": {"allOf": [prediction, {
                            "type": "object", "required": ["box"], "properties": {"box": {
                                "type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4,
                                "description": "[x, y, width, height] in the decoded image"}}}]}}}}),
                    **errors(400, 413, 415, 422)}}},
            "/health": {"get": {"summary": "The process is alive (no model work)", "responses": {
                "200": json_response("alive", {"type": "object", "properties": {"status": {"const": "ok"}}})}}},
            "/ready": {"get": {"summary": "A verified, self-tested model is loaded", "responses": {
                "200": json_response("ready", {"type": "object", "required": ["status", "model"], "properties": {
                    "status": {"const": "ready"}, "model": model,
                    "last_switch_error": {"type": ["string", "null"]}}})}}},
            "/model": {"get": {"summary": "The registered model being served", "responses": {
                "200": json_response("name, version, alias, run id, sha256, metrics", {"type": "object", "properties": {
                    "name": {"type": "string"}, "version": {"type": "string"}, "alias": {"type": "string"},
                    "run_id": {"type": "string"}, "sha256": {"type": "string"}, "variant": {"type": ["string", "null"]},
                    "source": {"enum": ["registry", "bundle"]}, "metrics": {"type": "object"},
                    "last_switch_error": {"type": ["string", "null"]}, "polling_seconds": {"type": "number"},
                    "quantised_from": {"type": ["string", "null"], "description": "name@version of the float model "
                                       "this INT8 copy was made from (MODEL_PRECISION=int8), else null"},
                    "int8_not_served": {"type": ["string", "null"], "description": "why no INT8 copy serves, "
                                        "when MODEL_PRECISION=int8 and the float model does"},
                    "reader": {"type": "object", "description": "the number reader POST /read uses (the same "
                               "fields), or `not_served` saying why there is none (/read then cuts numbers "
                               "into digits)"}}})}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {
                "200": json_response("OpenAPI 3.1", {"type": "object"})}}},
            "/docs": {"get": {"summary": "This document as a page", "responses": {
                "200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
            "/": {"get": {"summary": "The web page: draw a digit or upload a photo (uses the routes above)", "responses": {
                "200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
            **feedback_paths(),
            **v2_paths(name, version),
        },
        "components": {"schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string", "example": "not_an_image"}, "message": {"type": "string"}}}}},
            "ProtocolError": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}},
                              "description": "the Open Inference Protocol's error, every error under /v2"}}},
    }


EXAMPLES = {
    "/predict": ["curl -F image=@digit.png http://HOST/predict", "curl -X POST -T digit.jpg http://HOST/predict",
                 """curl -H 'Content-Type: application/json' -d '{"image": "'$(base64 -w0 digit.png)'"}' http://HOST/predict"""],
    "/predict/batch": ["curl -F images=@a.png -F images=@b.jpg http://HOST/predict/batch"],
    "/read": ["curl -F image=@number.png http://HOST/read"],
    "/feedback": ["""curl -H 'Content-Type: application/json' -d '{"id": "<a /predict answer's id>", "label": 7}' """
                  "http://HOST/feedback", "curl -F image=@digit.png -F label=7 -F answer=1 http://HOST/feedback",
                  "curl -X POST -T digit.png 'http://HOST/feedback?label=not_a_digit'"],
    "/v2/models/{name}/infer": [
        """curl -d '{"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["'$(base64 -w0 """
        """digit.png)'"]}]}' http://HOST/v2/models/digits/infer""",
        "tritonclient.http.InferenceServerClient('HOST').infer('digits', [images]) with images an InferInput"
        "('images', [N], 'BYTES') of encoded files, or InferInput('pixels', [N, 28, 28, 1], 'FP32')"],
}


def docs_page(spec: dict) -> str:
    """The document as one self-contained page (no CDN: many deployments have no internet)."""
    parts = [f"<h1>{html.escape(spec['info']['title'])} API</h1><p>{html.escape(spec['info']['description'])}</p>",
             '<p>Machine-readable: <a href="openapi.json">/openapi.json</a>. Errors are always JSON '
             '<code>{"error": {"code", "message"}}</code>.</p>']
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            parts.append(f'<section><h2><span class="m">{method.upper()}</span> {html.escape(path)}</h2>'
                         f"<p>{html.escape(op['summary'])}</p>")
            for example in EXAMPLES.get(path, []):
                parts.append(f"<pre>{html.escape(example)}</pre>")
            if "requestBody" in op:
                kinds = ", ".join(op["requestBody"]["content"])
                parts.append(f"<p><b>Body:</b> {html.escape(kinds)}</p>")
            rows = "".join(f"<tr><td>{s}</td><td>{html.escape(r['description'])}</td></tr>"
                           for s, r in op["responses"].items())
            parts.append(f"<table><tr><th>status</th><th>meaning</th></tr>{rows}</table>")
            schema = op["responses"]["200"].get("content", {}).get("application/json", {}).get("schema")
            if schema:
                parts.append(f"<details><summary>answer schema</summary><pre>{html.escape(json.dumps(schema, indent=1))}"
                             "</pre></details>")
            parts.append("</section>")
    style = ("body{font:16px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#111}"
             "pre{background:#f3f3f3;padding:.6rem;overflow-x:auto}td,th{border-bottom:1px solid #ddd;padding:.2rem .6rem;"
             "text-align:left}.m{background:#1a4d8f;color:#fff;padding:0 .4rem;border-radius:3px;font-size:.9em}")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width,initial-scale=1"><title>digits API</title><style>{style}</style></head>'
            f"<body>{''.join(parts)}</body></html>")
