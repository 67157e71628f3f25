"""gunicorn entry point: `gunicorn -c serve/gunicorn.conf.py serve.gunicorn_app:app`. A missing or
unverifiable champion exits the worker with a clear message instead of serving without a model."""
import sys

from serve.access import configure_logging
from serve.config import ConfigError, Settings
from serve.model import ModelError

try:
    settings = Settings()
    configure_logging(settings.log_format)
    from serve import create_app

    app = create_app(settings=settings)
except (ModelError, ConfigError) as e:
    print(f"serve: {e}", file=sys.stderr)
    sys.exit(4)  # gunicorn's "worker failed to boot": the master stops instead of respawning forever
