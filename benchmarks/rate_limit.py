"""Per-client rate limiting through the proxy (serve/proxy.py, `make serve-proxy`): one client floods,
another keeps to its rate. The flood gets JSON 429s from nginx; the other client must not notice.

    MODEL_DIR=bundle python benchmarks/rate_limit.py [--seconds 20] [--flooders 4] [--other-rate 5]

nginx with the environment's RATE_LIMIT / RATE_BURST (serve/config.py ProxySettings: 10 a second, burst
20 by default) in front of two backends of one worker each. The flooding client (source address
127.0.0.2; all of 127/8 is loopback) POSTs a small PNG to /predict on --flooders keep-alive connections as
fast as answers come; the other client (127.0.0.3) POSTs the same every 1/--other-rate seconds.

Exits 1 unless (conf/targets.yaml `proxy`): at least `flood_refused` of the flood is refused, every
refusal a JSON 429 `too_many_requests`, and the flood's accepted requests stay within what the limit
allows (RATE_LIMIT a second plus RATE_BURST); the other client has `other_refused` (none) of its requests
refused or failed, and its 99th percentile is under `other_p99_ms`.
"""
import argparse
import http.client
import json
import sys
import threading
import time
from collections import Counter

import numpy as np

from serve.config import ProxySettings
from testkit import targets
from testkit.images import png_bytes
from testkit.server import proxied

FLOODER, OTHER = "127.0.0.2", "127.0.0.3"


class Client:
    """One keep-alive connection from a source address; statuses, latencies and any non-JSON 429 kept."""

    def __init__(self, port, source, body):
        self.port, self.source, self.body = port, source, body
        self.statuses, self.ms, self.bad_refusals, self.connection = Counter(), [], 0, None

    def post(self):
        self.connection = self.connection or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30,
                                                                         source_address=(self.source, 0))
        started = time.perf_counter()
        try:
            self.connection.request("POST", "/predict", body=self.body, headers={"Content-Type": "image/png"})
            response = self.connection.getresponse()
            body = response.read()
            status = response.status
            if response.will_close:
                self.connection.close()
                self.connection = None
        except (http.client.HTTPException, OSError):
            self.connection.close()
            self.connection, status, body = None, None, b""
        self.ms.append((time.perf_counter() - started) * 1e3)
        self.statuses[status] += 1
        if status == 429 and not is_too_many(body):
            self.bad_refusals += 1


def is_too_many(body):
    try:
        return json.loads(body)["error"]["code"] == "too_many_requests"
    except (ValueError, KeyError, TypeError):
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--flooders", type=int, default=4, help="the flooding client's connections")
    parser.add_argument("--other-rate", type=float, default=5.0, help="the other client's requests a second")
    args = parser.parse_args()
    limits, goal = ProxySettings(), targets("proxy")
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 13:16] = 255  # a one
    body = png_bytes(digit)
    with proxied(rate_limit=limits.rate_limit, rate_burst=limits.rate_burst) as running:
        flood = [Client(running.port, FLOODER, body) for _ in range(args.flooders)]
        other = Client(running.port, OTHER, body)
        stop = time.perf_counter() + args.seconds

        def flooding(client):
            while time.perf_counter() < stop:
                client.post()

        threads = [threading.Thread(target=flooding, args=(c,), daemon=True) for c in flood]
        for thread in threads:
            thread.start()
        while time.perf_counter() < stop:
            next_at = time.perf_counter() + 1 / args.other_rate
            other.post()
            time.sleep(max(0.0, next_at - time.perf_counter()))
        for thread in threads:
            thread.join()
    flooded = sum((c.statuses for c in flood), Counter())
    sent, refused = sum(flooded.values()), flooded[429]
    allowed = limits.rate_limit * args.seconds + limits.rate_burst
    p50, p99 = np.percentile(other.ms, [50, 99])
    other_bad = sum(n for status, n in other.statuses.items() if status != 200)
    print(f"RATE_LIMIT {limits.rate_limit}/s, RATE_BURST {limits.rate_burst}; {args.seconds:.0f} s")
    print(f"flooding client ({FLOODER}, {args.flooders} connections): {sent:,} requests, {sent / args.seconds:,.0f}/s; "
          f"statuses {dict(flooded)}; refused {refused / sent:.1%} (target >= {goal['flood_refused']:.0%}); "
          f"{flooded[200]} accepted ({flooded[200] / args.seconds:.1f}/s; the limit allows {allowed:.0f}); "
          f"{sum(c.bad_refusals for c in flood)} refusals not JSON too_many_requests")
    print(f"other client ({OTHER}, {args.other_rate:g}/s): {len(other.ms)} requests, statuses {dict(other.statuses)}; "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (target {goal['other_p99_ms']} ms)")
    ok = (refused / sent >= goal["flood_refused"] and not any(c.bad_refusals for c in flood)
          and flooded[200] <= allowed + limits.rate_limit  # one second of slack: the clock edges
          and other_bad <= goal["other_refused"] and p99 < goal["other_p99_ms"])
    print(f"{'PASS' if ok else 'FAIL'} (conf/targets.yaml proxy)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
