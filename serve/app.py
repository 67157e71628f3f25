"""The Flask application factory: `create_app()` loads the champion once and serves it.

    POST /predict   an image (multipart field `image` or `file`, a raw image/* body, or JSON
                    {"image": "<base64 or data: URL>"}) -> {"prediction", "confidence", "probabilities", "model"}
    POST /predict/batch   multipart field `images`, repeated -> {"results": [one answer or error per image], "model"}
    GET  /health    alive (no model work)        GET /model   what is being served
"""
import base64
import binascii

import numpy as np
from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from serve.config import Settings
from serve.images import ImageError, to_model_input
from serve.model import load_champion


def create_app(champion=None, settings=None):
    """champion: a loaded serve.model.Champion (tests pass one); None resolves it from the registry
    (MODEL_NAME, MODEL_ALIAS, MLFLOW_TRACKING_URI) and fails loudly if there is none.
    settings: serve.config.Settings; None reads them from the environment."""
    app = Flask(__name__)
    app.settings = settings = settings or Settings()
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.champion = champion or load_champion()

    def answer(data: bytes) -> dict:
        probabilities = app.champion.predict(to_model_input(data, settings.max_image_pixels))[0]
        best = int(np.argmax(probabilities))
        return {"prediction": best, "confidence": round(float(probabilities[best]), 6),
                "probabilities": [round(float(p), 6) for p in probabilities], "model": app.champion.label}

    @app.errorhandler(ImageError)
    def image_error(e):
        return error(e.code, e.message, e.status)

    @app.errorhandler(HTTPException)
    def http_error(e):  # 404, 405, 413 ... as JSON, like every other answer
        return error(e.name.lower().replace(" ", "_"), e.description, e.code)

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.get("/model")
    def model():
        return app.champion.describe()

    @app.post("/predict")
    def predict():
        return answer(upload_bytes())

    @app.post("/predict/batch")
    def predict_batch():
        files = request.files.getlist("images")
        if not files:
            raise ImageError("no_image", "send the images as multipart fields named `images`, one per image")
        if len(files) > settings.max_batch_images:
            raise ImageError("too_many_images", f"{len(files)} images in one batch, the limit is "
                             f"{settings.max_batch_images} (MAX_BATCH_IMAGES)", status=413)
        results = []
        for index, upload in enumerate(files):
            try:  # one bad image is an error entry for that image, not a failed request
                results.append({"index": index, "filename": upload.filename, **answer(upload.read())})
            except ImageError as e:
                results.append({"index": index, "filename": upload.filename,
                                "error": {"code": e.code, "message": e.message, "status": e.status}})
        return {"results": results, "model": app.champion.label}

    return app


def error(code, message, status):
    return jsonify({"error": {"code": code, "message": message}}), status


def upload_bytes() -> bytes:
    """The image bytes of a request, however the client sent them."""
    for field in ("image", "file"):
        if field in request.files:
            return request.files[field].read()
    if request.is_json:
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
            raise ImageError("bad_request", 'JSON body must be {"image": "<base64 or data: URL>"}')
        text = payload["image"]
        if text.startswith("data:"):
            text = text.partition(",")[2]
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ImageError("bad_base64", f"the image field is not valid base64: {e}") from e
    if (request.mimetype or "").startswith("image/") or request.mimetype == "application/octet-stream":
        return request.get_data()
    raise ImageError("no_image", "send the image as multipart field `image`, a raw image/* body, "
                                 'or JSON {"image": "<base64>"}')
