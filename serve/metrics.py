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
IN_FLIGHT = Gauge("digits_http_requests_in_flight", "Requests being answered now", multiprocess_mode="livesum")
MODEL_LATENCY = Histogram("digits_model_seconds", "Time in the model alone (onnxruntime, one call of a batch)",
                          buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1))
# The calibrated confidence of each answer's best digit, answered or refused: when uploads drift from
# what the model knows, this histogram's mass moves down before any label says so.
CONFIDENCE = Histogram("digits_prediction_confidence", "Calibrated probability of the best digit, per image",
                       buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0))
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
        IN_FLIGHT.inc()
        g.in_flight = True

    @app.after_request
    def count(response):
        route = request.url_rule.rule if request.url_rule else "unmatched"
        REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        LATENCY.labels(route).observe(time.perf_counter() - g.get("started", time.perf_counter()))
        return response

    @app.teardown_request
    def leave(_error):  # runs whatever happened, so a failed request does not stay "in flight"
        if g.pop("in_flight", False):
            IN_FLIGHT.dec()


def switched(outcome, old, new):
    """serve.serving.Serving's on_switch: count alias moves, and say which version is served."""
    RELOADS.labels(outcome).inc()
    if outcome == "switched":
        if old is not None:
            MODEL.labels(old.label).set(0)
        MODEL.labels(new.label).set(1)
