"""Faults on the real gunicorn server: a worker SIGKILLed under load is replaced and only its own
connections fail; SIGTERM lets the requests in flight finish; a missing, truncated or tampered model
never gets a serving process. benchmarks/sustained_load.py is the full-size run (50,000 requests)."""
import http.client
import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from digits.contract import sha256

from testkit import ROOT, load
from testkit.server import free_port, server_env, start_server, stop_server


@pytest.fixture(scope="module")
def pool(mnist):
    return load.request_pool(mnist["x_test"], mnist["y_test"], per_kind=16)


def test_a_killed_worker_is_replaced_and_only_its_connections_fail(bundle, pool):
    port = free_port()
    server = start_server(port, server_env(bundle))
    try:
        outcome = load.run(port, server, pool, total=1500, concurrency=16, kill_at=500)
    finally:
        assert stop_server(server) == 0
    print("\n" + load.report(outcome))
    assert outcome["replaced"], "gunicorn did not replace the killed worker"
    # No wrong answer, no 5xx: the only errors are connections the killed worker held (one per client).
    assert {what for _, what in outcome["errors"]} <= {"dropped connection"}, outcome["errors"]
    assert sum(outcome["errors"].values()) <= 16
    answered = sum(len(ms) for ms in outcome["latency"].values())
    assert answered == 1500


def partial_request(port, body):
    """A connection that has sent its headers and half its body: a request in flight."""
    connection = socket.create_connection(("127.0.0.1", port))
    head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    connection.sendall(head + body[:len(body) // 2])
    return connection


def test_sigterm_lets_requests_in_flight_finish(bundle, pool):
    port = free_port()
    server = start_server(port, server_env(bundle))
    png = pool["small png"][0].body
    expected = load.references(port, {"one": [pool["small png"][0]]})[id(pool["small png"][0])]
    in_flight = [partial_request(port, png) for _ in range(4)]  # 2 workers x 2 threads: all being read
    time.sleep(0.5)
    server.send_signal(signal.SIGTERM)
    time.sleep(1.0)  # the workers have the signal now, and are draining
    assert server.poll() is None
    answers = []
    for connection in in_flight:
        connection.sendall(png[len(png) // 2:])
        response = http.client.HTTPResponse(connection)
        response.begin()
        answers.append((response.status, load.without_id(response.read())))  # ids hold the time they were given
        connection.close()
    assert server.wait(timeout=30) == 0
    assert answers == [expected] * 4
    assert json.loads(expected[1])["prediction"] is not None


def corrupt(bundle, tmp_path, how):
    """A copy of the bundle with model.onnx truncated, a byte flipped, or truncated with model.json's
    sha256 rewritten to match (the checksum passes; the file is still no model)."""
    folder = tmp_path / how
    folder.mkdir()
    model, meta = (bundle / "model.onnx").read_bytes(), json.loads((bundle / "model.json").read_text())
    if how == "flipped byte":
        model = model[:len(model) // 2] + bytes([model[len(model) // 2] ^ 1]) + model[len(model) // 2 + 1:]
    else:
        model = model[:len(model) // 3]
    if how == "truncated, sha256 rewritten":
        meta["sha256"] = sha256(model)
    (folder / "model.onnx").write_bytes(model)
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize("how, message", [
    ("truncated", "tampered with"), ("flipped byte", "tampered with"),
    ("truncated, sha256 rewritten", "not a loadable ONNX model")])
def test_a_truncated_or_tampered_model_never_serves(bundle, tmp_path, how, message):
    folder = corrupt(bundle, tmp_path, how)
    port = free_port()
    run = subprocess.run([sys.executable, "-m", "serve", "--port", str(port)], cwd=ROOT,
                         env=server_env(folder, WORKERS="2"), capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and message in run.stdout + run.stderr
    check = subprocess.run([sys.executable, "-m", "serve.check"], cwd=ROOT, env=server_env(folder),
                           capture_output=True, text=True, timeout=120)
    assert check.returncode != 0 and message in check.stderr  # what `make serve` runs first
