"""The real server for benchmarks and tests: `python -m serve` (gunicorn) on a free loopback port, and
what its workers are doing, read from Linux's /proc."""
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
           "THREADS": str(threads), "ACCESS_LOG": "/dev/null", "MODEL_POLL_SECONDS": "0", "PYTHONPATH": str(ROOT),
           **extra_env}
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
