"""The real server for tests and benchmarks: `python -m serve` (gunicorn) on a free loopback port, or
nginx in front of two of them (serve/proxy.py), HTTP helpers, and what its workers are doing, read from
Linux's /proc."""
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from testkit import ROOT


def server_env(bundle=None, **extra):
    """The environment for `python -m serve` serving the bundle folder `bundle` (MODEL_DIR), whatever the
    caller's environment says about tracking stores and metrics folders."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PROMETHEUS_MULTIPROC_DIR")}
    return {**env, **({"MODEL_DIR": str(bundle)} if bundle else {}), **extra}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proxied(bundle=None, logs=None, rate_limit=1000, rate_burst=1000, **extra_env):
    """serve.proxy.Proxy (nginx in front of two gunicorn backends) on free loopback ports, the backends
    serving `bundle` with registry polling off and their access log in logs/backend-PORT.log (when None,
    a fresh folder under the temp folder, left there to read afterwards); a context manager. The rate limit is high: tests and benchmarks load it from one
    address; pass a low one to see it work."""
    from serve.config import ProxySettings
    from serve.proxy import Proxy

    ports = set()
    while len(ports) < 3:
        ports.add(free_port())
    port, *backends = sorted(ports)
    env = server_env(bundle, MODEL_POLL_SECONDS="0", ACCESS_LOG="-", **extra_env)
    return Proxy(port=port, backend_ports=backends, env=env, settings=ProxySettings(rate_limit, rate_burst),
                 logs=logs or tempfile.mkdtemp(prefix="digits-proxy-logs-"))


def get_json(port, path, timeout=5):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def start_server(port, env=None, workers=2, threads=2, **extra_env):
    """gunicorn serving the champion the environment names (the registry, or MODEL_DIR); returns the
    process once /ready answers and all `workers` are up. Access log off, registry polling off."""
    env = {**(env or os.environ), "HOST": "127.0.0.1", "PORT": str(port), "WORKERS": str(workers),
           "THREADS": str(threads), "ACCESS_LOG": "/dev/null", "MODEL_POLL_SECONDS": "0", **extra_env}
    server = subprocess.Popen([sys.executable, "-m", "serve", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server did not start:\n{server.stderr.read()}")
        try:
            if get_json(port, "/ready", timeout=2)[0] == 200 and len(worker_pids(server)) == workers:
                return server
        except OSError:
            pass
        time.sleep(0.3)
    server.kill()
    raise RuntimeError("the server never became ready")


def stop_server(server, timeout=30):
    server.terminate()  # SIGTERM: gunicorn drains in-flight requests, then exits
    return server.wait(timeout=timeout)


def worker_pids(server):
    return sorted(int(p) for p in Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split())


def rss_mb(pids):
    """Resident memory of these processes together, MB (a pid that is gone counts 0)."""
    total = 0
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except FileNotFoundError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
    return total / 1024


def fetch(url, data=None, content_type="image/png"):
    """(status, body) of a GET (or a POST of `data`), 4xx and 5xx included."""
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_until_ready(base, seconds=60, log=None, server=None):
    """Poll GET /ready until the server at base answers 200; fail (with its log, if given) after `seconds`
    or as soon as the server process, if given, has exited."""
    deadline = time.time() + seconds
    while time.time() < deadline and not (server and server.poll() is not None):
        try:
            if fetch(base + "/ready")[0] == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the server never became ready" + (f":\n{Path(log).read_text()[-4000:]}" if log else ""))
