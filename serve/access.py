"""One line per request, and the request id that ties it to the client.

Every answer carries `X-Request-ID`: the client's own when it sent a usable one (1-128 characters of
letters, digits and `._:/+=-`), otherwise a new one (32 hex digits). The access log line has it too,
with the route (the rule, not the raw path), method, status, bytes, latency, the model version that
answered and what it answered. LOG_FORMAT=text (the default) or json (one JSON object per line, for a
log collector); ACCESS_LOG=- (stdout, the default), a file path to append to, or `off`.
"""
import json
import logging
import re
import sys
import threading
import time
import uuid
from datetime import datetime, timezone

from flask import g, request

HEADER = "X-Request-ID"
USABLE_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


class JsonFormatter(logging.Formatter):
    """The server's own log lines (startup, model switches, errors) as JSON when LOG_FORMAT=json."""

    def format(self, record):
        entry = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                 "level": record.levelname.lower(), "logger": record.name, "pid": record.process,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"), default=str)


def configure_logging(log_format):
    """The process's log lines (serve.model's switches and errors, ...), text or JSON, on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(
        "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def request_id() -> str:
    """The id of the request being answered (made before any route runs)."""
    return g.request_id


def note(model=None, prediction=None):
    """What a route answered, for its access log line: the model's label, and the prediction(s)."""
    g.model, g.prediction = model, prediction


class AccessLog:
    """Writes the access lines of one app: to a stream or a file, text or JSON, one whole line at a time."""

    def __init__(self, destination="-", log_format="text"):
        self.format = log_format
        self._lock = threading.Lock()
        if destination in ("off", ""):
            self._stream = None
        elif destination == "-":
            self._stream = sys.stdout
        else:
            self._stream = open(destination, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (lives with the app)

    def write(self, record: dict):
        if self._stream is None:
            return
        if self.format == "json":
            line = json.dumps(record, separators=(",", ":"), default=str)
        else:
            extra = "".join(f" {k}={record[k]}" for k in ("model", "prediction") if record.get(k) is not None)
            line = (f'{record["remote"]} "{record["method"]} {record["path"]} {record["protocol"]}" '
                    f'{record["status"]} {record["bytes"]} '
                    f'{record["latency_ms"]}ms id={record["request_id"]}{extra}'
                    + (f' ua={json.dumps(record["user_agent"])}' if record.get("user_agent") else ""))
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


def install(app, access_log: AccessLog):
    """Take or make the request id before each request; echo it and log the request after."""

    @app.before_request
    def take_id():
        given = request.headers.get(HEADER, "")
        g.request_id = given if USABLE_ID.fullmatch(given) else uuid.uuid4().hex
        g.access_started = time.perf_counter()

    @app.after_request
    def echo_and_log(response):
        rid = g.get("request_id") or uuid.uuid4().hex  # an error raised before take_id ran (a 413 on read)
        response.headers[HEADER] = rid
        started = g.get("access_started")
        access_log.write({
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "request_id": rid, "remote": request.remote_addr, "method": request.method,
            "route": request.url_rule.rule if request.url_rule else "unmatched", "path": request.path,
            "protocol": request.environ.get("SERVER_PROTOCOL"),
            "status": response.status_code, "bytes": response.content_length,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3) if started else None,
            "model": g.get("model"), "prediction": g.get("prediction"),
            "user_agent": request.user_agent.string or None})
        return response
