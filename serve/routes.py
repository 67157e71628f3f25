"""The routes, two blueprints: `api` reads images, `ops` says what is served and how it is doing.

    POST /predict         one image -> {"prediction", "confidence", "probabilities", "not_a_digit", "model", "id"}
                          (prediction null + "reason": "blank" or "not_a_digit" when it is no digit; `id`
                          is what POST /feedback takes to correct this answer: serve/answer_id.py)
    POST /predict/batch   multipart field `images`, repeated -> {"results": [answer or error per image], "model"}
    POST /read            a written number -> {"number", "digits": [{"prediction", "confidence", "box"}], "model"}
                          (number null + "reason" when the page is blank or a piece is not a digit)
    GET  /health  alive, no model work      GET /ready  a verified, self-tested model is loaded
    GET  /model   what is being served      GET /metrics  Prometheus      GET /openapi.json, /docs   GET /  the page
    /v2/...       the same model over the Open Inference Protocol (KServe v2, Triton's clients): serve/v2.py

Each image route reads the champion once, so an alias switch mid-request cannot mix two models, then
goes bytes -> decode -> normalise (-> segment) -> model -> JSON.
"""
import re

from flask import Blueprint, Response, current_app

from digits.contract import sha256
from digits.decode import ImageError, decode
from digits.normalise import normalise
from serve import access, answer_id, answers, metrics, reading, uploads
from serve.openapi import docs_page, openapi

api = Blueprint("api", __name__)
ops = Blueprint("ops", __name__)
api.before_request(uploads.check_parameters)


@api.post("/predict")
def predict():
    champion, settings = current_app.serving.champion, current_app.settings
    upload = uploads.upload_bytes()
    image28 = normalise(decode(upload, settings.max_image_pixels))
    answer = answers.digits([image28], champion, debug=uploads.debug())[0]
    access.note(champion.label, answers.said(answer))
    ident = answer_id.issue(settings.feedback_secret, image28, sha256(upload), answer,
                            champion.label)
    return {**answer, "model": champion.label, "id": ident}


@api.post("/predict/batch")
def predict_batch():
    champion, settings = current_app.serving.champion, current_app.settings
    results, images28 = [], []
    for index, upload in enumerate(uploads.batch_files(settings.max_batch_images)):
        entry = {"index": index, "filename": upload.filename}
        try:  # one bad image is an error entry for that image, not a failed request
            images28.append(normalise(decode(upload.read(), settings.max_image_pixels)))
        except ImageError as e:
            metrics.REJECTED.labels(e.code).inc()
            entry["error"] = {"code": e.code, "message": e.message, "status": e.status}
        results.append(entry)
    read = iter(answers.digits(images28, champion, debug=uploads.debug()) if images28 else [])  # one model call
    results = [entry if "error" in entry else {**entry, **next(read)} for entry in results]
    access.note(champion.label, [answers.said(r) if "error" not in r else "error" for r in results])
    return {"results": results, "model": champion.label}


@api.post("/read")
def read():
    champion, reader, limit = current_app.serving.champion, current_app.reading.champion, current_app.settings.max_image_pixels
    answer = reading.number(decode(uploads.upload_bytes(), limit), champion, reader, debug=uploads.debug())
    access.note(answer["model"], answer["number"] if answer["number"] is not None else answer["reason"])
    return answer


@ops.get("/")
def page():  # the web page (serve/static/): plain HTML/CSS/JS that talks to the API above, no CDN
    return current_app.send_static_file("index.html")


@ops.get("/health")
def health():
    return {"status": "ok"}


@ops.get("/ready")
def ready():
    # The champion was verified and self-tested before it was put in place: there is always one.
    serving = current_app.serving
    return {"status": "ready", "model": serving.champion.label, "last_switch_error": redacted(serving.last_error)}


@ops.get("/model")
def model():
    serving, reading = current_app.serving, current_app.reading
    reader = {**reading.champion.describe(), "last_switch_error": redacted(reading.last_error)} if reading.champion \
        else {"not_served": redacted(reading.last_error)}
    return {**serving.champion.describe(), "last_switch_error": redacted(serving.last_error),
            "polling_seconds": current_app.settings.model_poll_seconds if serving.registry else 0, "reader": reader}


@ops.get("/metrics")
def prometheus():
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


@ops.get("/openapi.json")
def openapi_json():
    return document()


@ops.get("/docs")
def docs():
    return Response(docs_page(document()), content_type="text/html; charset=utf-8")


def document() -> dict:
    champion = current_app.serving.champion
    return openapi(current_app.settings, champion.public_name, champion.version)


def redacted(text):
    """A registry error as anyone may read it: without the user:password@ a tracking URI can carry."""
    return text and re.sub(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@", r"\1***@", text)
