"""What slow clients do to the real server (docs/security.md, "Timeouts"): GET /health latency while a few
connections stall, on one gunicorn worker with 2 threads (the per-worker shape production runs), or with
--proxy through nginx in front of two such backends (serve/proxy.py, `make serve-proxy`).

    MODEL_DIR=bundle python benchmarks/slow_clients.py [--stalled 2] [--wait 15] [--proxy]

  idle:     connections that connect and send nothing (gunicorn's gthread worker waits 5 s for a first
            byte on a thread, then parks the connection in its poller and drops it after `keepalive`)
  headers:  connections that send half a request line and then nothing
  body:     connections that send full headers, Content-Length 1000, 10 bytes of body, then nothing

Exits 1 when /health is slower than conf/targets.yaml's `slow_clients` while they stall or once they close.
gunicorn alone misses it (a stalled connection holds a thread with no timeout); through the proxy, nginx
holds the stalled connections and the backends never see them.
"""
import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testkit import ROOT, targets
from testkit.server import free_port, proxied, server_env, wait_until_ready


def health_seconds(port, wait):
    """Seconds until GET /health answers, or None if it has not within `wait`."""
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if not s.recv(64).startswith(b"HTTP/1.1 200"):
                return None
    except socket.timeout:
        return None
    return time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stalled", type=int, default=2, help="stalled connections per scenario (threads: 2)")
    parser.add_argument("--wait", type=float, default=15.0, help="seconds to wait for /health")
    parser.add_argument("--proxy", action="store_true", help="through nginx in front of two backends")
    args = parser.parse_args(argv)
    if not os.environ.get("MODEL_DIR"):
        sys.exit("slow_clients: set MODEL_DIR to a bundle (python -m serve bundle DIR)")
    with served(os.environ["MODEL_DIR"], args.proxy) as port:
        missed = stall(port, args.stalled, args.wait)
    print(f"{len(missed)} targets missed (conf/targets.yaml slow_clients)" + "".join(f"\n  MISS {m}" for m in missed))
    return 1 if missed else 0


@contextlib.contextmanager
def served(bundle, proxy):
    """-> the port to stall: gunicorn alone, one worker with 2 threads, or nginx in front of two such."""
    if proxy:
        with proxied(bundle) as running:
            yield running.port
        return
    port, log = free_port(), Path(tempfile.mkdtemp(prefix="slow-clients-")) / "server.log"
    env = server_env(bundle, WORKERS="1", THREADS="2", MODEL_POLL_SECONDS="0")
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "serve", "--port", str(port)], cwd=ROOT, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", 90, log, server)
        yield port
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def stall(port, count, wait):
    """Each scenario: `count` stalled connections, /health timed while they stall and once they close."""
    goal, missed = targets("slow_clients"), []
    scenarios = {"idle": b"",
                 "headers": b"POST /predict HTT",
                 "body": b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
                         + b"\x89PNG\r\n\x1a\n\0\0"}
    print(f"no stalled connection: /health in {health_seconds(port, wait):.3f} s")
    for name, sent in scenarios.items():
        stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
        for s in stalled:
            s.sendall(sent)
        time.sleep(0.5)
        seconds = health_seconds(port, wait)
        took = f"{seconds:.3f} s" if seconds is not None else f"no answer within {wait:.0f} s"
        print(f"{count} stalled '{name}' connections: /health {took} (target {goal['health_s']} s)")
        if seconds is None or seconds > goal["health_s"]:
            missed.append(f"'{name}': /health {took} while they stall")
        for s in stalled:
            s.close()
        recovered = health_seconds(port, wait)
        print(f"  after closing them: /health {'%.3f s' % recovered if recovered is not None else 'no answer'}")
        if recovered is None or recovered > goal["recovered_s"]:
            missed.append(f"'{name}': /health {recovered} s after they close")
    return missed


if __name__ == "__main__":
    sys.exit(main())
