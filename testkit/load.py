"""Sustained mixed load on the real server, with a worker SIGKILLed half-way: what real clients send, in
a seeded order. Small PNG digits, upload-like photos and scans in every format (testkit/uploads.py, from
MNIST test digits), batches of 8, written numbers to /read, and bad inputs (random bytes, SVG, a
truncated PNG, a decompression bomb). First every distinct request is sent once, alone: its answer is
the reference. Under load, an answer with another status or another body, or a dropped connection, is
an unexpected error. Clients do not retry. benchmarks/sustained_load.py runs 50,000; tests fewer.
"""
import base64
import http.client
import json
import os
import signal
import threading
import time
from collections import Counter, defaultdict, namedtuple

import numpy as np

from testkit import hostile, uploads
from testkit.images import png_bytes
from testkit.server import rss_mb, worker_pids

Request = namedtuple("Request", "kind path headers body")
MIX = {"small png": 0.35, "photo or scan": 0.20, "batch of 8": 0.10, "number": 0.15, "bad input": 0.20}
PHOTO_CONDITIONS = ("phone_photo", "paper_jpeg", "rgba_canvas", "exif_rotated", "png16", "webp", "tiff", "cmyk_jpeg")


def request_pool(x, y, per_kind=40, seed=0):
    """The distinct requests the load repeats: kind -> [Request]."""
    def raw(kind, path, data, content_type="application/octet-stream"):
        return Request(kind, path, {"Content-Type": content_type}, data)

    rng = np.random.default_rng(seed)
    pool = {"small png": [raw("small png", "/predict", png_bytes(x[i]), "image/png") for i in range(per_kind)]}
    photos = []
    for condition in PHOTO_CONDITIONS:
        photos += [raw("photo or scan", "/predict", data) for data, _ in
                   uploads.generate(condition, per_kind // len(PHOTO_CONDITIONS) + 1, seed, x, y)]
    pool["photo or scan"] = photos
    batches = []
    for b in range(per_kind // 4):
        files = [("images", f"{i}.png", "image/png", png_bytes(x[(b * 8 + i) % len(x)])) for i in range(8)]
        body, content_type = hostile.multipart(files)
        batches.append(Request("batch of 8", "/predict/batch", {"Content-Type": content_type}, body))
    pool["batch of 8"] = batches
    pool["number"] = [raw("number", "/read", data) for data, _ in uploads.generate("number", per_kind, seed, x, y)]
    png = png_bytes(x[0])
    bad = [raw("bad input", "/predict", rng.integers(0, 256, 500, np.uint8).tobytes()),
           raw("bad input", "/predict", hostile.NOT_IMAGES["svg"], "image/svg+xml"),
           raw("bad input", "/predict", png[:len(png) // 2], "image/png"),
           raw("bad input", "/predict", hostile.png_of_zeros(20_000, 20_000), "image/png"),
           raw("bad input", "/read", b"", "image/png"),
           Request("bad input", "/predict", {"Content-Type": "application/json"},
                   json.dumps({"image": "data:image/png;base64," + base64.b64encode(png).decode()[:-7]}).encode())]
    pool["bad input"] = bad
    return pool


def schedule(pool, total, seed=0):
    """A seeded sequence of `total` requests in the MIX proportions."""
    rng = np.random.default_rng(seed)
    kinds = list(MIX)
    share = np.array([MIX[k] for k in kinds])
    chosen = rng.choice(len(kinds), total, p=share / share.sum())
    return [pool[kinds[k]][rng.integers(len(pool[kinds[k]]))] for k in chosen]


def send(connection, request):
    """-> (status, body); raises on a dropped connection. The body without a /predict answer's `id`, which
    differs at every answer (it holds the time it was given: serve/answer_id.py)."""
    connection.request("POST", request.path, body=request.body, headers=request.headers)
    response = connection.getresponse()
    return response.status, without_id(response.read())


def without_id(body: bytes) -> bytes:
    if not body.startswith(b"{") or b'"id"' not in body:
        return body
    answer = json.loads(body)
    if isinstance(answer, dict) and answer.pop("id", None) is not None:
        return json.dumps(answer, sort_keys=True).encode()
    return body


def references(port, pool):
    """Each distinct request once, alone: the answer every repeat under load must equal."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    answers = {}
    for requests in pool.values():
        for request in requests:
            answers[id(request)] = send(connection, request)
    connection.close()
    return answers


class Load:
    """`concurrency` client threads, one keep-alive connection each, working through `todo` in order."""

    def __init__(self, port, todo, expected, concurrency):
        self.port, self.todo, self.expected, self.concurrency = port, todo, expected, concurrency
        self.next, self.lock = 0, threading.Lock()
        self.done = 0
        self.latency = defaultdict(list)  # kind -> ms
        self.errors = Counter()  # (kind, what) -> count
        self.examples = []

    def take(self):
        with self.lock:
            index, self.next = self.next, self.next + 1
            return self.todo[index] if index < len(self.todo) else None

    def client(self):
        connection = None
        while (request := self.take()) is not None:
            connection = connection or http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            start = time.perf_counter()
            try:
                answer = send(connection, request)
            except (http.client.HTTPException, OSError) as e:
                connection.close()
                connection = None
                answer = (None, f"{type(e).__name__}: {e}".encode())
            ms = (time.perf_counter() - start) * 1e3
            with self.lock:
                self.done += 1
                self.latency[request.kind].append(ms)
                if answer != self.expected[id(request)]:
                    what = "dropped connection" if answer[0] is None else f"status {answer[0]}" \
                        if answer[0] != self.expected[id(request)][0] else "different answer"
                    self.errors[(request.kind, what)] += 1
                    if len(self.examples) < 5:
                        self.examples.append((request.kind, answer[0], answer[1][:160]))

    def run(self):
        threads = [threading.Thread(target=self.client, daemon=True) for _ in range(self.concurrency)]
        for thread in threads:
            thread.start()
        return threads


def run(port, server, pool, total, concurrency, kill_at=None, seed=0, progress=None, every=10.0):
    """The load, with memory samples and an optional worker kill -> dict of what happened. progress: called
    with a line every `every` seconds (requests done, rate, errors so far, ETA)."""
    todo = schedule(pool, total, seed)
    expected = references(port, pool)
    load = Load(port, todo, expected, concurrency)
    workers = worker_pids(server)
    rss_at = {}
    killed = replaced = replaced_after_s = None
    started = time.perf_counter()
    threads = load.run()
    shown = started
    while any(t.is_alive() for t in threads):
        time.sleep(0.02)
        now = time.perf_counter()
        if progress and now - shown >= every and load.done:
            shown, rate = now, load.done / (now - started)
            progress(f"  {load.done:,}/{total:,} requests, {rate:.0f}/s, {sum(load.errors.values())} unexpected so far, "
                     f"ETA {(total - load.done) / rate:.0f} s")
        if load.done >= min(10_000, total // 5) and "first" not in rss_at:
            rss_at["first"] = {pid: rss_mb([pid]) for pid in workers}
        if kill_at and killed is None and load.done >= kill_at:
            killed, kill_time = workers[0], time.perf_counter()
            os.kill(killed, signal.SIGKILL)
        if killed and replaced is None:
            now = worker_pids(server)
            if len(now) == len(workers) and killed not in now:
                replaced, replaced_after_s = sorted(set(now) - set(workers))[0], time.perf_counter() - kill_time
    elapsed = time.perf_counter() - started
    rss_at["end"] = {pid: rss_mb([pid]) for pid in worker_pids(server)}
    return {"total": total, "concurrency": concurrency, "elapsed": elapsed, "latency": load.latency,
            "errors": load.errors, "examples": load.examples, "workers": workers, "rss": rss_at,
            "killed": killed, "replaced": replaced, "replaced_after_s": replaced_after_s}


def run_through(port, pool, total, concurrency, at=None, action=None, seed=0, progress=None, every=10.0):
    """The same load against a server whose workers are not ours to watch (nginx in front of backends:
    serve/proxy.py): `action()` is called once, when `at` requests are done (e.g. kill a backend).
    -> what report() reads, without the worker and memory lines."""
    load = Load(port, schedule(pool, total, seed), references(port, pool), concurrency)
    started, acted_at = time.perf_counter(), None
    threads = load.run()
    shown = started
    while any(t.is_alive() for t in threads):
        time.sleep(0.02)
        if progress and time.perf_counter() - shown >= every and load.done:
            shown = time.perf_counter()
            progress(f"  {load.done:,}/{total:,} requests, {load.done / (shown - started):.0f}/s, "
                     f"{sum(load.errors.values())} unexpected so far")
        if action and acted_at is None and load.done >= at:
            acted_at = load.done
            action()
    return {"total": total, "concurrency": concurrency, "elapsed": time.perf_counter() - started,
            "latency": load.latency, "errors": load.errors, "examples": load.examples, "acted_at": acted_at}


def report(outcome):
    lines = [f"{outcome['total']:,} requests at concurrency {outcome['concurrency']} in {outcome['elapsed']:.0f} s: "
             f"{outcome['total'] / outcome['elapsed']:.0f} requests/s"]
    lines.append(f"{'kind':<14} {'requests':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} {'errors':>6}")
    every = []
    for kind in MIX:
        ms = outcome["latency"][kind]
        every += ms
        errors = sum(n for (k, _), n in outcome["errors"].items() if k == kind)
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        lines.append(f"{kind:<14} {len(ms):>8} {p50:>7.1f} {p90:>7.1f} {p99:>7.1f} {max(ms):>7.1f} {errors:>6}")
    p50, p90, p99 = np.percentile(every, [50, 90, 99])
    failed = sum(outcome["errors"].values())
    lines.append(f"{'all':<14} {len(every):>8} {p50:>7.1f} {p90:>7.1f} {p99:>7.1f} {max(every):>7.1f} {failed:>6}")
    lines.append(f"unexpected errors: {failed} = {failed / outcome['total']:.3%} "
                 f"({', '.join(f'{k}: {w} x{n}' for (k, w), n in outcome['errors'].items()) or 'none'})")
    for example in outcome["examples"]:
        lines.append(f"  e.g. {example}")
    if "workers" not in outcome:  # run_through: no workers watched
        return "\n".join(lines)
    first, end = outcome["rss"].get("first", {}), outcome["rss"]["end"]
    for pid in outcome["workers"]:
        if pid == outcome["killed"]:
            lines.append(f"worker {pid}: {first.get(pid, 0):.0f} MB at request 10,000; SIGKILLed")
        else:
            lines.append(f"worker {pid}: {first[pid]:.0f} MB at request 10,000, {end[pid]:.0f} MB at the end "
                         f"({end[pid] / first[pid] - 1:+.1%}; goal < +10%)")
    if outcome["killed"]:
        lines.append(f"killed worker {outcome['killed']} -> " + (
            f"replaced by {outcome['replaced']} after {outcome['replaced_after_s']:.1f} s, "
            f"{end.get(outcome['replaced'], 0):.0f} MB at the end" if outcome["replaced"] else "NOT REPLACED"))
    return "\n".join(lines)


def survivors_growth(outcome):
    """The largest growth of resident memory among the workers that lived through the load."""
    first, end = outcome["rss"]["first"], outcome["rss"]["end"]
    return max(end[pid] / first[pid] - 1 for pid in outcome["workers"] if pid != outcome["killed"])
