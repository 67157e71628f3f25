"""How an image arrives, and what a request may ask: the bytes of the upload and the checked parameters.

An image comes as multipart field `image` (or `file`), a raw body (any image/* type, octet-stream or
none: `curl -X POST -T f`), or JSON {"image": "<base64 or data: URL>"}. Anything else, or a parameter
serve/openapi.py does not document, is an ImageError (a JSON 4xx), never a silent guess. Uploads never
touch the disk (InMemoryRequest).
"""
import io
import json

from flask import Request, request
from werkzeug.exceptions import RequestEntityTooLarge

from digits.decode import ImageError, from_base64
from serve.openapi import DEBUG_VALUES

BATCH_ENDPOINT = "api.predict_batch"


class LengthReads:
    """gunicorn's request body reads its socket 1 KiB at a time and copies the rest of its 8 KiB buffer at
    every step (gunicorn.http.body.Body.read): a 3.7 MB phone photo took 10-13 ms to read that way, 3.5 ms
    through the length reader it wraps, which gathers whole socket reads (measured in process over a
    socket pair). This stands in for wsgi.input and reads through that reader; readline, used by nothing
    here, still goes through the body, which shares the reader and holds nothing buffered yet."""

    def __init__(self, body):
        self.body, self.reader = body, body.reader

    def read(self, size=-1):
        return self.reader.read(size if size is not None and size >= 0 else self.reader.length)

    def __getattr__(self, name):
        return getattr(self.body, name)


def whole_reads(wsgi_app):
    """WSGI middleware: under gunicorn, a body with a Content-Length is read through LengthReads."""
    def app(environ, start_response):
        body = environ.get("wsgi.input")
        if type(body).__module__ == "gunicorn.http.body" and type(getattr(body, "reader", None)).__name__ == \
                "LengthReader" and body.buf.tell() == 0:
            environ["wsgi.input"] = LengthReads(body)
        return wsgi_app(environ, start_response)
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


def check_parameters():
    """What serve/openapi.py documents for the image routes, nothing looser: ?debug at most once, with a
    documented value; multipart with exactly the documented fields."""
    debug = request.args.getlist("debug")
    if len(debug) > 1 or (debug and debug[0] not in DEBUG_VALUES):
        raise ImageError("bad_parameter", f"debug is one of {', '.join(DEBUG_VALUES)}, given at most once")
    if request.mimetype == "multipart/form-data":
        fields = set(request.files) | set(request.form)
        allowed = {"images"} if request.endpoint == BATCH_ENDPOINT else {"image", "file"}
        if fields - allowed or fields >= {"image", "file"}:
            raise ImageError("bad_request", f"unexpected multipart fields {sorted(fields)}: send only "
                             + ("`images`, once per image" if allowed == {"images"} else "`image` (or `file`)"))


def debug() -> bool:
    """?debug=1 (or true): add the 28x28 the model saw to each answer."""
    return request.args.get("debug") in ("1", "true")


def upload_bytes() -> bytes:
    """The image bytes of a request, however the client sent them."""
    mimetype = request.mimetype or ""
    if mimetype == "multipart/form-data":  # only multipart has files: a raw body is never parsed as a form
        for field in ("image", "file"):
            if field in request.files:
                return request.files[field].read()
    if request.is_json:
        payload = parse_json(request.get_data())
        if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
            raise ImageError("bad_request", 'JSON body must be {"image": "<base64 or data: URL>"}')
        return from_base64(payload["image"])
    if mimetype.startswith("image/") or mimetype in ("application/octet-stream", ""):  # "" is `curl -X POST -T f`
        return request.get_data()
    raise ImageError("no_image", "send the image as multipart field `image`, a raw image/* body, "
                                 'or JSON {"image": "<base64>"}')


def parse_json(data: bytes):
    """JSON bytes -> the value, or a 400. Parsed here, not by get_json: a deeply nested body raises
    RecursionError, which must be a 400 too, not a 500. (Used by serve/v2.py as well.)"""
    try:
        return json.loads(data)
    except RecursionError:
        raise ImageError("bad_json", "the JSON body is nested too deeply") from None
    except ValueError as e:  # also bytes that are not UTF-8
        raise ImageError("bad_json", f"the body is not valid JSON: {e}") from None


def batch_files(limit):
    """The uploads of a batch (multipart `images`, repeated), at most `limit` of them."""
    files = request.files.getlist("images")
    if not files:
        raise ImageError("no_image", "send the images as multipart fields named `images`, one per image")
    if len(files) > limit:
        raise ImageError("too_many_images", f"{len(files)} images in one batch, the limit is {limit} "
                         "(MAX_BATCH_IMAGES)", status=413)
    return files
