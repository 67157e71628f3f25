"""Sustained mixed load on the real server, with a worker SIGKILLed half-way (testkit/load.py).

    python benchmarks/sustained_load.py                         # 50,000 requests, 32 connections
    python benchmarks/sustained_load.py --requests 5000 --kill-at 0   # shorter, no kill
    python benchmarks/sustained_load.py --proxy                 # through nginx; a whole backend SIGKILLed

Starts gunicorn (`python -m serve`, serve/gunicorn.conf.py's 2 workers x 2 threads on 2 cores) serving
the registered champion (or MODEL_DIR) and sends a mix of what real clients send, in a seeded order.

Prints throughput, latency percentiles per kind, unexpected errors, each worker's resident memory at the
10,000th request and at the end, and how fast the killed worker was replaced. Exits 1 unless the errors
(the requests lost to the killed worker count) and the surviving workers' memory growth are under
conf/targets.yaml's `sustained_load`, the killed worker was replaced and the server exited cleanly.

--proxy: the same load through nginx in front of two backends of one worker each (serve/proxy.py, `make
serve-proxy`), and half-way one whole backend (gunicorn master and worker) is SIGKILLed: nginx must send
what it lost to the other. Exits 1 unless the errors are under conf/targets.yaml's `proxy` `errors`, the
other backend lived and nginx and it stopped cleanly.
"""
import argparse
import sys

import numpy as np

from testkit import ROOT, load, targets
from testkit.server import free_port, proxied, start_server, stop_server


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--kill-at", type=int, help="SIGKILL a worker after this many requests "
                                                    "(default: half-way; 0: never)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--proxy", action="store_true", help="through nginx in front of two backends; the kill "
                                                             "takes a whole backend")
    args = parser.parse_args()
    kill_at = args.requests // 2 if args.kill_at is None else args.kill_at
    test = np.load(ROOT / "data" / "prepared" / "test.npz")
    pool = load.request_pool(test["x"], test["y"], seed=args.seed)
    if args.proxy:
        return through_proxy(pool, args.requests, args.concurrency, kill_at, args.seed)
    port = free_port()
    server = start_server(port)
    try:
        outcome = load.run(port, server, pool, args.requests, args.concurrency, kill_at or None, args.seed,
                           progress=lambda line: print(line, flush=True))
    finally:
        code = stop_server(server)
    print(load.report(outcome))
    goal = targets("sustained_load")
    failed = sum(outcome["errors"].values())
    ok = (failed < goal["errors"] * args.requests and load.survivors_growth(outcome) < goal["rss_growth"]
          and (not kill_at or outcome["replaced"]) and code == 0)
    print(f"server exit status {code}; {'PASS' if ok else 'FAIL'} (conf/targets.yaml sustained_load: errors under "
          f"{goal['errors']:.1%}, each surviving worker's memory growth under {goal['rss_growth']:.0%})")
    return 0 if ok else 1


def through_proxy(pool, total, concurrency, kill_at, seed):
    with proxied() as running:  # the environment's champion (registry or MODEL_DIR), like start_server
        outcome = load.run_through(running.port, pool, total, concurrency, kill_at or None,
                                   lambda: running.kill_backend(0), seed, progress=lambda line: print(line, flush=True))
        survived = running.backends[1].poll() is None
        codes = running.close()
    print(load.report(outcome))
    goal = targets("proxy")
    failed = sum(outcome["errors"].values())
    ok = (failed < goal["errors"] * total and survived and codes["nginx"] == 0
          and codes[running.backend_ports[1]] == 0 and (not kill_at or outcome["acted_at"]))
    print(f"backend on {running.backend_ports[0]} " + (f"SIGKILLed after {outcome['acted_at']:,} requests" if kill_at
                                                       else "left alone") + f"; exit statuses {codes}")
    print(f"{'PASS' if ok else 'FAIL'} (conf/targets.yaml proxy: errors under {goal['errors']:.1%}, the other backend "
          "alive to the end, nginx and it stopped cleanly)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
