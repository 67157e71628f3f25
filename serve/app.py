"""The Flask application factory: `create_app()` loads the verified champion and registers the routes
(serve/routes.py, the Open Inference Protocol's in serve/v2.py, users' corrections in serve/feedback.py), the JSON errors (serve/errors.py),
the request id and access log (serve/access.py) and the metrics hooks (serve/metrics.py); around it,
whole reads of gunicorn's request body (serve/uploads.py), the drain of unread bodies (serve/drain.py)
and, behind a proxy (PROXY_HOPS), werkzeug's ProxyFix."""
from flask import Flask
from werkzeug.datastructures import ImmutableDict
from werkzeug.middleware.proxy_fix import ProxyFix

from serve import access, errors, feedback, metrics, routes, uploads, v2
from serve.config import Settings
from serve.drain import DrainUnreadBody
from serve.model import Registry, load_champion, load_reader
from serve.serving import Serving
from serve.uploads import InMemoryRequest


class App(Flask):
    """No automatic OPTIONS answers, not even for /static: the API is same-origin (no CORS preflight to
    answer) and every answer is JSON, so OPTIONS gets the same JSON 405 as any other wrong method."""
    default_config = ImmutableDict({**Flask.default_config, "PROVIDE_AUTOMATIC_OPTIONS": False})
    request_class = InMemoryRequest  # uploads stay in memory, and a body over the limit is a 413


def create_app(champion=None, settings=None, registry=None, reader=None):
    """champion: a loaded serve.model.Champion (tests pass one); None loads the one the environment names
    (MODEL_DIR, or MODEL_NAME@MODEL_ALIAS in MLFLOW_TRACKING_URI) and fails loudly if none verifies.
    registry: where to look for alias moves (a serve.model.Registry); None: the environment's registry
    when the champion came from it. settings: serve.config.Settings; None reads the environment.
    reader: a loaded number reader (kind "reader") for /read; None: the environment's (serve.model.load_reader)
    when the champion comes from the environment, else none (/read then cuts numbers into digits)."""
    app = App(__name__)
    app.settings = settings = settings or Settings()
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.config["DEBUG"] = False  # FLASK_DEBUG=1 in the environment would make errors propagate: HTML 500s
    reader_registry, no_reader = None, None if reader else "no reader given"
    if champion is None:
        champion = load_champion(settings.onnx_threads)
        if champion.source == "registry" and registry is None:
            registry = Registry()
        if reader is None:
            reader, no_reader, reader_registry = load_reader(settings.onnx_threads)
    app.serving = Serving(champion, registry, settings.onnx_threads, on_switch=metrics.switched)
    app.reading = Serving(reader, reader_registry, settings.onnx_threads, on_switch=metrics.switched, last_error=no_reader)
    for model in (champion, reader):
        if model is not None:
            metrics.MODEL.labels(model.label).set(1)
    app.serving.watch(settings.model_poll_seconds)
    app.reading.watch(settings.model_poll_seconds)

    access.install(app, access.AccessLog(settings.access_log, settings.log_format))
    metrics.instrument(app)
    errors.register(app)
    app.register_blueprint(routes.api)
    app.register_blueprint(routes.ops)
    app.register_blueprint(v2.v2)
    app.register_blueprint(feedback.feedback)  # its store is opened on the first correction, not here
    app.wsgi_app = uploads.whole_reads(app.wsgi_app)
    app.wsgi_app = DrainUnreadBody(app.wsgi_app, settings.drain_bytes, settings.drain_seconds)
    if settings.proxy_hops:  # the client address and scheme as the trusted proxies saw them, not as sent
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops, x_proto=settings.proxy_hops)
    return app
