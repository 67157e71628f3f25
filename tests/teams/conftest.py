"""Fixtures of the team tests (tests/teams/, marked `teams`): real servers on loopback, nothing mocked.

`tracking_server`: one MLflow tracking server for the whole session, as a team runs it (ops/tracking_server.py:
PostgreSQL backend store, proxied artifacts), on a private PostgreSQL cluster (testkit/postgres.py) and a
free loopback port. Its value is the server's URL, http://127.0.0.1:PORT: set MLFLOW_TRACKING_URI to it (in
a subprocess's environment, or with monkeypatch) to log runs and register models there. Tests share it, so
give experiments and registered models names of their own, or expect to find others' next to yours.
"""
import pytest

from ops.tracking_server import running
from testkit.postgres import cluster
from testkit.server import free_port


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory):
    """The URL of a real `mlflow server` on PostgreSQL with proxied artifacts, stopped (with its cluster)
    after the session. Its log: the `server.log` in the folder named `tracking` under pytest's basetemp."""
    home = tmp_path_factory.mktemp("tracking")
    with cluster("mlflow") as backend, running(home, port=free_port(), backend_store_uri=backend, workers=2) as url:
        yield url
