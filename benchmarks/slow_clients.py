"""What slow clients do to the real server (docs/security.md, "Timeouts"): GET /health latency while a few
connections stall, on one gunicorn worker with 2 threads (the per-worker shape production runs).

    MODEL_DIR=bundle python benchmarks/slow_clients.py [--stalled 2] [--wait 15]

  idle:     connections that connect and send nothing (gunicorn's gthread worker waits 5 s for a first
            byte on a thread, then parks the connection in its poller and drops it after `keepalive`)
  headers:  connections that send half a request line and then nothing
  body:     connections that send full headers, Content-Length 1000, 10 bytes of body, then nothing

Exits 1 when /health is slower than conf/targets.yaml's `slow_clients` while they stall or once they close.
gunicorn alone misses it (a stalled connection holds a thread with no timeout): production puts a
buffering proxy in front (docs/security.md).
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testkit import ROOT, targets
from testkit.server import free_port, server_env, wait_until_ready


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
    args = parser.parse_args(argv)
    if not os.environ.get("MODEL_DIR"):
        sys.exit("slow_clients: set MODEL_DIR to a bundle (python -m serve bundle DIR)")
    goal, missed = targets("slow_clients"), []
    port, log = free_port(), Path(tempfile.mkdtemp(prefix="slow-clients-")) / "server.log"
    env = server_env(os.environ["MODEL_DIR"], WORKERS="1", THREADS="2", MODEL_POLL_SECONDS="0")
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "serve", "--port", str(port)], cwd=ROOT, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    scenarios = {"idle": b"",
                 "headers": b"POST /predict HTT",
                 "body": b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
                         + b"\x89PNG\r\n\x1a\n\0\0"}
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", 90, log, server)
        print(f"no stalled connection: /health in {health_seconds(port, args.wait):.3f} s")
        for name, sent in scenarios.items():
            stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(args.stalled)]
            for s in stalled:
                s.sendall(sent)
            time.sleep(0.5)
            seconds = health_seconds(port, args.wait)
            took = f"{seconds:.3f} s" if seconds is not None else f"no answer within {args.wait:.0f} s"
            print(f"{args.stalled} stalled '{name}' connections: /health {took} (target {goal['health_s']} s)")
            if seconds is None or seconds > goal["health_s"]:
                missed.append(f"'{name}': /health {took} while they stall")
            for s in stalled:
                s.close()
            recovered = health_seconds(port, args.wait)
            print(f"  after closing them: /health {'%.3f s' % recovered if recovered is not None else 'no answer'}")
            if recovered is None or recovered > goal["recovered_s"]:
                missed.append(f"'{name}': /health {recovered} s after they close")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    print(f"{len(missed)} targets missed (conf/targets.yaml slow_clients)" + "".join(f"\n  MISS {m}" for m in missed))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
