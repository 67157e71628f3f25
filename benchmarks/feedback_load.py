"""Feedback writes under load: p50/p99 latency and rate of POST /feedback from 16 client threads at once,
every one a new correction (a distinct upload), so each is a real write to the store.

    python benchmarks/feedback_load.py [--requests 3000] [--clients 16] [--workers N] [--postgres]

Starts `python -m serve` (gunicorn, serve/gunicorn.conf.py: WORKERS workers x 2 threads) on a free
loopback port, serving the registered champion (or MODEL_DIR), with its store a fresh SQLite file (or,
with --postgres, a private PostgreSQL cluster: testkit/postgres.py) and FEEDBACK_RATE off. Each client
thread keeps one connection and posts raw PNG digits with ?label=; the latency is the client's, request
sent to answer read. Then checks the store holds every correction once. Goal (conf/targets.yaml
`feedback`): p99 at most p99_ms; exits 1 when missed, or when a correction is lost or an answer is not 201.
"""
import argparse
import http.client
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np

from testkit import targets
from testkit.images import png_bytes
from testkit.postgres import cluster
from testkit.server import free_port, server_env, start_server, stop_server


def uploads(count, seed=0):
    """`count` distinct 28x28 PNGs: a stroke at a random place and angle (what the store keeps is the same
    28x28 whatever the upload, so a drawn digit or a photo costs the write the same)."""
    rng, found = np.random.default_rng(seed), []
    for i in range(count):
        image = np.zeros((28, 28), np.uint8)
        x, y = rng.integers(6, 22, 2)
        image[y - 5:y + 5, x - 1:x + 2] = 255
        image[i % 28, (i // 28) % 28] = 128 + (i // 784) % 100  # distinct bytes, every one
        found.append(png_bytes(image))
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--postgres", action="store_true", help="the store on PostgreSQL instead of SQLite")
    args = parser.parse_args(argv)
    goal, images = targets("feedback"), uploads(args.requests)
    local, latencies = threading.local(), []

    with (cluster() if args.postgres else nullcontext()) as pg, tempfile.TemporaryDirectory() as scratch:
        url = pg or f"sqlite:///{scratch}/feedback.db"
        port = free_port()
        server = start_server(port, server_env(None, FEEDBACK_DB_URL=url, FEEDBACK_RATE="0"),
                              workers=args.workers, threads=2)

        def post(i):
            if not hasattr(local, "connection"):
                local.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            started = time.perf_counter()
            local.connection.request("POST", f"/feedback?label={i % 10}", body=images[i],
                                     headers={"Content-Type": "image/png"})
            response = local.connection.getresponse()
            response.read()
            latencies.append(time.perf_counter() - started)
            return response.status

        try:
            post(0)  # the store's first use (migration) is not part of the load
            latencies.clear()
            started = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                statuses = list(pool.map(post, range(1, args.requests)))
            elapsed = time.perf_counter() - started
        finally:
            stop_server(server)
        from serve.store import Store

        store = Store(url)
        kept = len(store.rows())
        store.engine.dispose()

    ms = np.array(latencies) * 1000
    p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
    ok = sum(s == 201 for s in statuses)
    print(f"feedback_load: {len(statuses)} POST /feedback from {args.clients} threads, {args.workers} workers x 2 "
          f"threads, store {'PostgreSQL' if args.postgres else 'SQLite'}: {len(statuses) / elapsed:.0f}/s, "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (target <= {goal['p99_ms']} ms), max {ms.max():.1f} ms; "
          f"{ok} answered 201, {kept} kept (of {args.requests})")
    missed = []
    if p99 > goal["p99_ms"]:
        missed.append(f"p99 {p99:.1f} ms over {goal['p99_ms']} ms")
    if ok != len(statuses) or kept != args.requests:
        missed.append(f"{len(statuses) - ok} answers not 201, {args.requests - kept} corrections not kept")
    if missed:
        print("feedback_load: MISSED: " + "; ".join(missed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
