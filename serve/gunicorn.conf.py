"""gunicorn settings for `make serve` / `python -m serve`: `gunicorn -c serve/gunicorn.conf.py serve.gunicorn_app:app`.

Sizing: a /predict is ~2.5-3.5 ms of server CPU with the version 7 champion (decode 0.04 ms, normalise
0.4, onnxruntime 0.8, Flask and HTTP the rest; 1.2-1.6 ms with the `strong` champion of 2026-11-25:
docs/benchmarks.md), most of it Python holding the GIL. So one worker process per core (each with
ONNX_THREADS=1, so workers never fight over cores), and 2 threads per worker: one can wait on a slow
client's upload while the other computes. More
threads only queue on the GIL: at 8 concurrent clients on 2 cores, 4 threads per worker halved the
/health rate and doubled /predict's p99 (docs/benchmarks.md).
"""
import os
import secrets
import shutil
import tempfile

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WORKERS") or os.cpu_count() or 1)
worker_class = "gthread"
threads = int(os.environ.get("THREADS", "2"))
timeout = 30  # a worker stuck this long is killed and replaced
graceful_timeout = 20  # SIGTERM: stop accepting, finish in-flight requests for up to this long
keepalive = 5
# The access log is the app's own (serve/access.py: request id, model, prediction; LOG_FORMAT=text|json),
# written by each worker to ACCESS_LOG (stdout by default): gunicorn's would say the same without them.
os.environ.setdefault("ACCESS_LOG", "-")
accesslog = None
errorlog = "-"
logconfig_dict = {}
if os.environ.get("LOG_FORMAT") == "json":  # gunicorn's own lines (boot, worker exits) as JSON too
    logconfig_dict = {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"json": {"()": "serve.access.JsonFormatter"}},
        "handlers": {name: {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
                     for name in ("console", "error_console")},  # gunicorn's own handler names
        "loggers": {"gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False}}}
# No request line or header can tie up a worker: gunicorn's defaults, stated (tests/service/test_security.py).
# Over them gunicorn itself answers 400 (request line) or 431 (headers), as text/html, not JSON.
limit_request_line = 4094  # bytes of "METHOD /path?query HTTP/1.1"; our longest URL is /predict/batch?debug=false
limit_request_fields = 100
limit_request_field_size = 8190  # bytes of one header line
# gunicorn's runtime control socket lives at one fixed path per user: two servers (or a test beside a
# running server) would fight over it, and nothing here needs it.
control_socket_disable = True

# The key that signs /predict's answer ids (serve/answer_id.py), made here, before the workers fork, when the
# operator set none: a POST /feedback may land on another worker than its /predict, so all must share it.
os.environ.setdefault("FEEDBACK_SECRET", secrets.token_hex(32))

# One folder for the workers' Prometheus counters, made before any worker imports prometheus_client.
metrics_dir = tempfile.mkdtemp(prefix="digits-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # a replaced worker's gauges leave the sum


def on_exit(server):
    shutil.rmtree(metrics_dir, ignore_errors=True)
