"""Every error is JSON {"error": {"code", "message"}} with its 4xx status: the upload errors of
digits.decode and serve.uploads, and werkzeug's own (404, 405 with its Allow header, 413 ...). Under /v2
(serve/v2.py) the same errors take the Open Inference Protocol's form, {"error": "<message>"}, which its
clients read (tritonclient raises it as InferenceServerException)."""
from flask import jsonify, request
from werkzeug.exceptions import HTTPException

from digits.decode import ImageError
from serve import metrics
from serve.v2 import PREFIX


def error(code, message, status):
    if request.path == PREFIX or request.path.startswith(PREFIX + "/"):
        return jsonify({"error": message}), status
    return jsonify({"error": {"code": code, "message": message}}), status


def image_error(e):
    metrics.REJECTED.labels(e.code).inc()
    return error(e.code, e.message, e.status)


def http_error(e):
    code = e.name.lower().replace(" ", "_")
    if e.code == 413:
        metrics.REJECTED.labels(code).inc()
    # werkzeug's own headers but its HTML content type: a 405 keeps `Allow` (RFC 9110 requires it)
    headers = [(k, v) for k, v in e.get_headers() if k.lower() != "content-type"]
    return (*error(code, e.description, e.code), headers)


def register(app):
    app.register_error_handler(ImageError, image_error)
    app.register_error_handler(HTTPException, http_error)
