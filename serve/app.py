"""The Flask application factory: `create_app()` loads the verified champion and serves it.

    POST /predict         one image -> {"prediction", "confidence", "probabilities", "not_a_digit", "model"}
                          (prediction null + "reason": "blank" or "not_a_digit" when it is no digit)
    POST /predict/batch   multipart field `images`, repeated -> {"results": [answer or error per image], "model"}
    POST /read            a written number -> {"number", "digits": [{"prediction", "confidence", "box"}], "model"}
                          (number null + "reason" when the page is blank or a piece is not a digit)
    GET  /health  alive, no model work      GET /ready  a verified, self-tested model is loaded
    GET  /model   what is being served      GET /metrics  Prometheus      GET /openapi.json, /docs

An image comes as multipart field `image` (or `file`), a raw image/* body, or JSON
{"image": "<base64 or data: URL>"}. Every error is JSON {"error": {"code", "message"}} with a 4xx status.
"""
import base64
import binascii
import io
import json
import re
import time

import numpy as np
from flask import Flask, Request, Response, g, jsonify, request
from werkzeug.datastructures import ImmutableDict
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from serve import metrics
from serve.config import Settings
from serve.images import ImageError, decode, normalise, png_data_url
from serve.model import Registry, Serving, load_champion
from serve.segment import read as read_number
from serve.openapi import DEBUG_VALUES, docs_page, openapi


class App(Flask):
    """No automatic OPTIONS answers, not even for /static: the API is same-origin (no CORS preflight to
    answer) and every answer is JSON, so OPTIONS gets the same JSON 405 as any other wrong method."""
    default_config = ImmutableDict({**Flask.default_config, "PROVIDE_AUTOMATIC_OPTIONS": False})


def create_app(champion=None, settings=None, registry=None):
    """champion: a loaded serve.model.Champion (tests pass one); None loads the one the environment names
    (MODEL_DIR, or MODEL_NAME@MODEL_ALIAS in MLFLOW_TRACKING_URI) and fails loudly if none verifies.
    registry: where to look for alias moves (a serve.model.Registry); None: the environment's registry
    when the champion came from it. settings: serve.config.Settings; None reads the environment."""
    app = App(__name__)
    app.request_class = InMemoryRequest
    app.settings = settings = settings or Settings()
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.config["DEBUG"] = False  # FLASK_DEBUG=1 in the environment would make errors propagate: HTML 500s
    if champion is None:
        champion = load_champion(settings.onnx_threads)
        if champion.source == "registry" and registry is None:
            registry = Registry()
    app.serving = serving = Serving(champion, registry, settings.onnx_threads, on_switch=switched)
    metrics.MODEL.labels(champion.label).set(1)
    serving.watch(settings.model_poll_seconds)

    def predictions(images28, champion, probabilities=None):
        """[N, 28, 28] -> one answer dict per image, all from the same champion. Confidence is calibrated
        (the registered temperature); under the registered threshold the answer is "not a digit".
        probabilities: the champion's calibrated output for these images, when the caller already has it."""
        if probabilities is None:
            probabilities = champion.calibrated(np.stack(images28)[..., None])
        answers = []
        for image28, p in zip(images28, probabilities):
            digits = p[:10]
            best = int(np.argmax(digits))
            answer = {"prediction": best, "confidence": round(float(digits[best]), 6),
                      "probabilities": [round(float(x), 6) for x in digits],
                      "not_a_digit": round(max(0.0, 1.0 - float(digits.sum())), 6)}
            if not image28.any():  # no ink at all: the model's opinion of an empty square means nothing
                answer.update(prediction=None, reason="blank", confidence=0.0, probabilities=[0.0] * 10, not_a_digit=1.0)
            elif digits[best] < champion.rejection_threshold:
                answer.update(prediction=None, reason="not_a_digit")
            metrics.PREDICTIONS.labels(str(answer["prediction"]) if answer["prediction"] is not None else answer["reason"]).inc()
            if request.args.get("debug") in ("1", "true"):
                answer["input"] = png_data_url(image28)  # the 28x28 the model saw
            answers.append(answer)
        return answers

    def answer(data: bytes, champion) -> dict:
        return predictions([normalise(decode(data, settings.max_image_pixels))], champion)[0]

    @app.before_request
    def start_clock():
        g.started = time.perf_counter()

    @app.before_request
    def check_parameters():  # what serve/openapi.py documents, nothing looser: a 400, not a silent guess
        if request.endpoint not in ("predict", "predict_batch", "read"):
            return
        debug = request.args.getlist("debug")
        if len(debug) > 1 or (debug and debug[0] not in DEBUG_VALUES):
            raise ImageError("bad_parameter", f"debug is one of {', '.join(DEBUG_VALUES)}, given at most once")
        if request.mimetype == "multipart/form-data":
            fields = set(request.files) | set(request.form)
            allowed = {"images"} if request.endpoint == "predict_batch" else {"image", "file"}
            if fields - allowed or fields >= {"image", "file"}:
                raise ImageError("bad_request", f"unexpected multipart fields {sorted(fields)}: send only "
                                 + ("`images`, once per image" if allowed == {"images"} else "`image` (or `file`)"))

    @app.after_request
    def count(response):
        route = request.url_rule.rule if request.url_rule else "unmatched"  # not the raw path: bounded labels
        metrics.REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        metrics.LATENCY.labels(route).observe(time.perf_counter() - g.get("started", time.perf_counter()))
        return response

    @app.errorhandler(ImageError)
    def image_error(e):
        metrics.REJECTED.labels(e.code).inc()
        return error(e.code, e.message, e.status)

    @app.errorhandler(HTTPException)
    def http_error(e):  # 404, 405, 413 ... as JSON, like every other answer
        code = e.name.lower().replace(" ", "_")
        if e.code == 413:
            metrics.REJECTED.labels(code).inc()
        # werkzeug's own headers but its HTML content type: a 405 keeps `Allow` (RFC 9110 requires it)
        headers = [(k, v) for k, v in e.get_headers() if k.lower() != "content-type"]
        return (*error(code, e.description, e.code), headers)

    @app.get("/")
    def page():  # the web page (serve/static/): plain HTML/CSS/JS that talks to the API below, no CDN
        return app.send_static_file("index.html")

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.get("/ready")
    def ready():
        # The champion was verified and self-tested before it was put in place: there is always one.
        return {"status": "ready", "model": serving.champion.label, "last_switch_error": redacted(serving.last_error)}

    @app.get("/model")
    def model():
        return {**serving.champion.describe(), "last_switch_error": redacted(serving.last_error),
                "polling_seconds": settings.model_poll_seconds if serving.registry else 0}

    @app.get("/metrics")
    def prometheus():
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)

    @app.get("/openapi.json")
    def openapi_json():
        return openapi(settings)

    @app.get("/docs")
    def docs():
        return Response(docs_page(openapi(settings)), content_type="text/html; charset=utf-8")

    @app.post("/predict")
    def predict():
        champion = serving.champion  # read once: an alias switch mid-request cannot mix two models
        return {**answer(upload_bytes(), champion), "model": champion.label}

    @app.post("/predict/batch")
    def predict_batch():
        champion = serving.champion
        files = request.files.getlist("images")
        if not files:
            raise ImageError("no_image", "send the images as multipart fields named `images`, one per image")
        if len(files) > settings.max_batch_images:
            raise ImageError("too_many_images", f"{len(files)} images in one batch, the limit is "
                             f"{settings.max_batch_images} (MAX_BATCH_IMAGES)", status=413)
        results = []
        for index, upload in enumerate(files):
            try:  # one bad image is an error entry for that image, not a failed request
                results.append({"index": index, "filename": upload.filename, **answer(upload.read(), champion)})
            except ImageError as e:
                metrics.REJECTED.labels(e.code).inc()
                results.append({"index": index, "filename": upload.filename,
                                "error": {"code": e.code, "message": e.message, "status": e.status}})
        return {"results": results, "model": champion.label}

    @app.post("/read")
    def read():
        champion = serving.champion
        found = read_number(decode(upload_bytes(), settings.max_image_pixels), champion.calibrated)
        digits = predictions([image for _, image, _ in found], champion, [p for _, _, p in found]) if found else []
        for (box, _, _), digit in zip(found, digits):
            digit["box"] = box
        if not digits:
            return {"number": None, "reason": "blank", "digits": [], "model": champion.label}
        if any(d["prediction"] is None for d in digits):  # a number with a hole in it is not that number
            return {"number": None, "reason": "not_a_digit", "digits": digits, "model": champion.label}
        return {"number": "".join(str(d["prediction"]) for d in digits), "digits": digits, "model": champion.label}

    return app


class InMemoryRequest(Request):
    """Uploads never touch the disk, and a body over MAX_CONTENT_LENGTH is a 413 however it is sent.

    werkzeug spools a multipart file part over 500 kB to a temporary file; here every part stays in memory.
    That is bounded: a Content-Length over the limit is refused before a byte is read, and a chunked body
    (no Content-Length) is read through werkzeug's LimitedStream, which stops at the limit. For multipart
    it then raises 413 itself; for a raw or JSON body it silently returns the first MAX_CONTENT_LENGTH
    bytes (a truncated image, a "corrupt" 400), so get_data looks one byte further and says 413."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()

    def get_data(self, cache=True, as_text=False, parse_form_data=False):
        data = super().get_data(cache, as_text, parse_form_data)
        limit = self.max_content_length
        if self.content_length is None and limit is not None and len(data) >= limit \
                and self.environ["wsgi.input"].read(1):
            raise RequestEntityTooLarge()
        return data


def redacted(text):
    """A registry error as anyone may read it: without the user:password@ a tracking URI can carry."""
    return text and re.sub(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@", r"\1***@", text)


def switched(outcome, old, new):
    metrics.RELOADS.labels(outcome).inc()
    if outcome == "switched":
        metrics.MODEL.labels(old.label).set(0)
        metrics.MODEL.labels(new.label).set(1)


def error(code, message, status):
    return jsonify({"error": {"code": code, "message": message}}), status


def upload_bytes() -> bytes:
    """The image bytes of a request, however the client sent them."""
    for field in ("image", "file"):
        if field in request.files:
            return request.files[field].read()
    if request.is_json:
        try:  # parsed here, not by get_json: a deeply nested body raises RecursionError, not a 500
            payload = json.loads(request.get_data())
        except RecursionError:
            raise ImageError("bad_json", "the JSON body is nested too deeply") from None
        except ValueError as e:  # also bytes that are not UTF-8
            raise ImageError("bad_json", f"the body is not valid JSON: {e}") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
            raise ImageError("bad_request", 'JSON body must be {"image": "<base64 or data: URL>"}')
        text = payload["image"]
        if text.startswith("data:"):
            text = text.partition(",")[2]
        try:  # strict, as /openapi.json's pattern says: no whitespace, padded
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ImageError("bad_base64", f"the image field is not valid base64: {e}") from e
    mimetype = request.mimetype or ""
    if mimetype.startswith("image/") or mimetype in ("application/octet-stream", ""):  # "" is `curl -X POST -T f`
        return request.get_data()
    raise ImageError("no_image", "send the image as multipart field `image`, a raw image/* body, "
                                 'or JSON {"image": "<base64>"}')
