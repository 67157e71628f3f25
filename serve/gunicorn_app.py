"""gunicorn entry point: `gunicorn -c serve/gunicorn.conf.py serve.gunicorn_app:app`. A missing or
unverifiable champion exits the worker with a clear message instead of serving without a model."""
import logging
import sys

from serve.config import ConfigError
from serve.model import ModelError

logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
try:
    from serve import create_app

    app = create_app()
except (ModelError, ConfigError) as e:
    print(f"serve: {e}", file=sys.stderr)
    sys.exit(4)  # gunicorn's "worker failed to boot": the master stops instead of respawning forever
