"""Prometheus metrics for GET /metrics.

Under gunicorn every worker is its own process: serve/gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR
at a fresh folder before any worker starts, so one scrape adds up all workers (prometheus_client's
multiprocess mode) instead of showing whichever worker happened to answer.
"""
import os
import time

from flask import g, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, \
    generate_latest, multiprocess

REQUESTS = Counter("digits_http_requests_total", "HTTP requests answered, by route and status",
                   ["route", "method", "status"])
LATENCY = Histogram("digits_http_request_duration_seconds", "Time to answer a request, by route", ["route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56))
PREDICTIONS = Counter("digits_predictions_total", "Digits predicted, by class", ["digit"])
REJECTED = Counter("digits_rejected_uploads_total", "Uploads refused, by error code", ["reason"])
RELOADS = Counter("digits_model_switches_total", "Alias moves seen: switched to the new version or refused it",
                  ["outcome"])
MODEL = Gauge("digits_model_version_info", "1 for the model version being served", ["model"],
              multiprocess_mode="max")


def exposition():
    """(body, content type) of the current metrics, all workers added up when there are several."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def instrument(app):
    """Count every request by route (the rule, not the raw path: bounded labels), method and status, and
    time it."""

    @app.before_request
    def start_clock():
        g.started = time.perf_counter()

    @app.after_request
    def count(response):
        route = request.url_rule.rule if request.url_rule else "unmatched"
        REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        LATENCY.labels(route).observe(time.perf_counter() - g.get("started", time.perf_counter()))
        return response


def switched(outcome, old, new):
    """serve.model.Serving's on_switch: count alias moves, and say which version is served."""
    RELOADS.labels(outcome).inc()
    if outcome == "switched":
        MODEL.labels(old.label).set(0)
        MODEL.labels(new.label).set(1)
