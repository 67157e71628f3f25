"""Every error is JSON {"error": {"code", "message"}} with its 4xx status: the upload errors of
digits.decode and serve.uploads, and werkzeug's own (404, 405 with its Allow header, 413 ...)."""
from flask import jsonify
from werkzeug.exceptions import HTTPException

from digits.decode import ImageError
from serve import metrics


def error(code, message, status):
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
