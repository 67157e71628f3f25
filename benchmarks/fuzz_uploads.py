"""Hostile uploads against the real server: generated cases (testkit/hostile.py), none of which may break it.

    python benchmarks/fuzz_uploads.py                        # 10,000 cases (+ the bombs), seed 0
    python benchmarks/fuzz_uploads.py --cases 2000 --seed 7 --threads 8
    python benchmarks/fuzz_uploads.py --proxy                # through nginx in front of two backends

Starts gunicorn (`python -m serve`, the registered champion or MODEL_DIR) on a free loopback port and
sends them, deterministically from --seed. The bombs go first, one at a time, with the workers' memory
read before and after.

Pass, or the exit status is 1: no 5xx; every answer JSON, either a 4xx error or an answer of the
documented shape (gunicorn itself refuses over-long request lines and headers and control characters in
headers, before the app, with an HTML 400/414/431: counted apart); no worker died or was replaced;
every bomb refused with a 4xx in time, no answer slower than `answer_ms`, and the workers' resident
memory after the bombs close to before (conf/targets.yaml `fuzz_uploads`). With --proxy the cases go through nginx (serve/proxy.py, `make
serve-proxy`) to two backends of one worker each: the same judgement, nginx's own refusals (JSON 400, 413,
414) included, and no worker of either backend may die.
"""
import argparse
import sys
import time

from testkit import fuzz
from testkit.server import free_port, proxied, start_server, stop_server


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=4, help="concurrent client connections")
    parser.add_argument("--proxy", action="store_true", help="through nginx in front of two backends")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.proxy:
        with proxied() as running:  # the environment's champion (registry or MODEL_DIR), like start_server
            outcome = fuzz.fuzz(running.port, running.backends, args.cases, args.seed, args.threads)
    else:
        port = free_port()
        server = start_server(port)
        try:
            outcome = fuzz.fuzz(port, server, args.cases, args.seed, args.threads)
        finally:
            stop_server(server)
    print(fuzz.report(outcome))
    print(f"{time.perf_counter() - started:.0f} s in all; {'PASS' if fuzz.passed(outcome) else 'FAIL'}")
    return 0 if fuzz.passed(outcome) else 1


if __name__ == "__main__":
    sys.exit(main())
