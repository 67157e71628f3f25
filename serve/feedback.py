"""POST /feedback: a user says what an image really is; GET /feedback/stats: how many corrections, by label,
model version and review state.

A correction names its image one of two ways:
  - the `id` of a recent /predict answer (serve/answer_id.py: a signed token holding the 28x28 the model
    saw, the upload's sha256, the answer and the model), sent as JSON {"id", "label"} or form fields;
  - the image itself, the three ways /predict takes one (serve/uploads.py): multipart `image`/`file` with
    form fields, JSON {"image", "label", ...}, or a raw image body with ?label=...; then `answer`, `model`
    and `confidence` are what the client says the service answered (kept as claimed, never trusted).
`label` is 0-9 or "not_a_digit" ("not a digit" too). 201 {"id", ...} for a new correction; 200 with the
same id and "duplicate": true when this upload was already corrected to this label (it counts once).

Limits (docs/security.md "Feedback"): FEEDBACK_RATE corrections a minute per client address with a burst
of FEEDBACK_BURST (429 with Retry-After), checked before the body is read; the body at most
FEEDBACK_MAX_BYTES (413); FEEDBACK_MAX_PENDING corrections waiting for review in all (507). The rate is
counted in each worker's memory, so a client can reach WORKERS x the rate: the store would make it exact,
but at the price of a write per refused request, which is what a flood wants; nginx's limit_req in front
(`make serve-proxy`) is the global one. Behind a proxy, PROXY_HOPS makes the client address the real one.
"""
import math
import threading
import time

from flask import Blueprint, current_app, request
from werkzeug.exceptions import TooManyRequests

from digits.contract import CLASSES, sha256
from digits.decode import ImageError, decode
from digits.normalise import normalise
from serve import answer_id, uploads

feedback = Blueprint("feedback", __name__)
LABELS = CLASSES  # what a user may say an image is: 0-9 or "not_a_digit", the model's own classes
ANSWERS = LABELS + ("blank",)
FIELDS = {"label", "id", "answer", "model", "confidence"}  # and the image: JSON `image`, multipart image/file


class RateLimit:
    """A token bucket per client address: `rate` a minute, `burst` at once. Bounded: past 10,000 addresses
    the full buckets (clients quiet for a while) are forgotten, and if none are, the oldest half."""

    def __init__(self, per_minute: float, burst: int, clients=10_000):
        self.rate, self.burst, self.clients = per_minute / 60, burst, clients
        self.buckets, self.lock = {}, threading.Lock()

    def wait(self, client, now=None) -> float:
        """0 when the client may go on (one token taken), else the seconds until it may."""
        now = time.monotonic() if now is None else now
        with self.lock:
            tokens, then = self.buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if len(self.buckets) >= self.clients:
                self.forget(now)
            if tokens >= 1:
                self.buckets[client] = (tokens - 1, now)
                return 0.0
            self.buckets[client] = (tokens, now)
            return (1 - tokens) / self.rate

    def forget(self, now):
        full = [c for c, (t, then) in self.buckets.items() if t + (now - then) * self.rate >= self.burst]
        for client in full or list(self.buckets)[:len(self.buckets) // 2]:
            del self.buckets[client]


@feedback.before_request
def limits():
    settings = current_app.settings
    request.max_content_length = settings.feedback_body_limit()
    if request.method != "POST" or not settings.feedback_rate:
        return
    limiter = current_app.extensions.get("feedback_rate")
    if limiter is None:
        limiter = current_app.extensions["feedback_rate"] = RateLimit(settings.feedback_rate, settings.feedback_burst)
    wait = limiter.wait(request.remote_addr)
    if wait:
        raise TooManyRequests(f"over {settings.feedback_rate:g} corrections a minute from this address "
                              f"(FEEDBACK_RATE, burst {settings.feedback_burst}): try again in "
                              f"{math.ceil(wait)} s", retry_after=math.ceil(wait))


def store():
    """The store, opened on first use (serve/store.py is imported only then)."""
    from serve.store import Store

    return Store.open(current_app.settings.feedback_url())


@feedback.post("/feedback")
def correct():
    settings = current_app.settings
    fields, image = sent()
    label = choice(fields.get("label"), LABELS, "label", required=True)
    if ("id" in fields) == (image is not None):
        raise ImageError("no_image" if image is None else "bad_request",
                         "send either the `id` of a /predict answer or the image itself, one of them")
    if "id" in fields:
        said = answer_id.read(settings.feedback_secret, fields["id"], settings.feedback_id_seconds)
        for name, value in (("answer", said.answer), ("model", said.model)):
            if name in fields and str(fields[name]) != value:
                raise ImageError("bad_request", f"`{name}` {fields[name]!r} is not what this id says ({value!r})")
        row = dict(sha256=said.sha256, image28=said.image28, answer=said.answer, confidence=said.confidence,
                   model=said.model, source="id")
    else:
        image28 = answer_id.to_uint8(normalise(decode(image, settings.max_image_pixels)))
        keep = settings.feedback_store_raw and len(image) <= settings.feedback_raw_max_bytes
        row = dict(sha256=sha256(image), image28=image28,
                   answer=choice(fields.get("answer"), ANSWERS, "answer"), confidence=confidence(fields),
                   model=text(fields.get("model"), "model"), raw=image if keep else None, source="upload")
    from serve.store import StoreFull

    try:
        ident, new = store().add(label=label, max_pending=settings.feedback_max_pending, **row)
    except StoreFull:
        raise ImageError("store_full", f"{settings.feedback_max_pending:,} corrections are waiting for review "
                         "(FEEDBACK_MAX_PENDING): none is taken until the operator reviews them", 507) from None
    body = {"id": ident, "label": label, "answer": row["answer"], "model": row["model"], "state": "pending",
            "duplicate": not new}
    return body, 201 if new else 200


@feedback.get("/feedback/stats")
def stats():
    return store().stats()


def sent():
    """(the fields, the image bytes or None), however the request came: the query's fields and the body's
    (a JSON object's keys, or multipart's text fields), none given twice; a field no one documents is a 400."""
    if request.args.keys() - FIELDS:
        raise ImageError("bad_request", f"query parameters are {', '.join(sorted(FIELDS))}")
    fields = {k: single(request.args, k) for k in request.args}
    mimetype, body = request.mimetype or "", {}
    if mimetype == "multipart/form-data":
        files = set(request.files)
        if set(request.form) - FIELDS or files - {"image", "file"} or len(files) > 1:
            raise ImageError("bad_request", f"multipart fields are {', '.join(sorted(FIELDS))} and the image "
                             "as `image` (or `file`), each at most once")
        body, image = {k: single(request.form, k) for k in request.form}, bool(files)
    elif request.is_json:
        body = uploads.parse_json(request.get_data())
        if not isinstance(body, dict) or set(body) - FIELDS - {"image"}:
            raise ImageError("bad_request", f'JSON body is an object of {", ".join(sorted(FIELDS))} and "image" '
                             "(base64), no other key")
        image = "image" in body
        body = {k: v for k, v in body.items() if k != "image"}
    else:  # a raw body is the image, or nothing when the query names an id
        image = not ("id" in fields and not request.get_data())
    if fields.keys() & body.keys():
        raise ImageError("bad_request", f"{', '.join(sorted(fields.keys() & body.keys()))} given twice: in the "
                         "query and in the body")
    return {**fields, **body}, uploads.upload_bytes() if image else None


def single(values, name):
    found = values.getlist(name)
    if len(found) != 1:
        raise ImageError("bad_request", f"`{name}` given {len(found)} times")
    return found[0]


def choice(value, allowed, name, required=False):
    if value is None and not required:
        return None
    if value == "not a digit":
        value = "not_a_digit"
    elif isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value not in allowed:
        raise ImageError(f"bad_{name}", f"`{name}` is one of 0-9 or \"not_a_digit\""
                         + (' or "blank"' if "blank" in allowed else "") + f", not {value!r}")
    return value


def text(value, name, limit=255):
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise ImageError("bad_request", f"`{name}` is a string of 1-{limit} characters")
    return value


def confidence(fields):
    value = fields.get("confidence")
    if value is None:
        return None
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not 0 <= number <= 1:
        raise ImageError("bad_request", "`confidence` is a number from 0 to 1")
    return number
