"""Hostile uploads sent to a real server and judged: every answer must keep the API's contract (no 5xx;
JSON, either a 4xx error with a code and a message or an answer of the documented shape), bombs are
refused in time, no worker dies and the workers' memory stays flat. Targets: conf/targets.yaml
`fuzz_uploads`. The cases: testkit/hostile.py.
"""
import http.client
import json
import threading
import time
from collections import Counter, namedtuple
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from testkit import targets
from testkit.hostile import bomb_cases, cases
from testkit.server import rss_mb, worker_pids

Result = namedtuple("Result", "case status content_type body ms")


def problem(result):
    """Why an answer breaks the contract, or None."""
    case, status = result.case, result.status
    if status is None:
        return f"no answer: {result.body!r}"
    if status >= 500:
        return f"{status}: {result.body[:200]!r}"
    if case.method in ("HEAD",):
        return None
    if not result.content_type.startswith("application/json"):
        if gunicorn_refusal(result):
            return None  # malformed at the HTTP level: gunicorn refuses it before the app sees it
        if case.method == "GET" and status == 200 and result.content_type.startswith("text/html"):
            return None  # the web page
        return f"{status} answered {result.content_type!r}, not JSON: {result.body[:120]!r}"
    try:
        answer = json.loads(result.body)
    except ValueError:
        return f"{status} with a body that is not JSON: {result.body[:120]!r}"
    if 400 <= status < 500:
        error = answer.get("error") if isinstance(answer, dict) else None
        ok = isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message"), str)
        return None if ok else f"{status} without an error code and message: {answer!r:.200}"
    if case.family.startswith("bomb") or case.family == "not images":  # must be refused, image by image
        entries = answer.get("results", [answer]) if case.path == "/predict/batch" else [answer]
        if not all(400 <= e.get("error", {}).get("status", 200) < 500 for e in entries):
            return f"{case.family} was answered {status}: {answer!r:.200}"
    if case.method == "POST":
        return answer_problem(case.path, answer)
    return None


def gunicorn_refusal(result):
    """gunicorn's own HTML 400/414/431 for a request line or header it will not parse (too long, control
    characters): only for the cases built to provoke it."""
    return (result.case.family in ("long urls and headers", "content types") and result.status in (400, 414, 431)
            and result.content_type == "text/html" and result.body.startswith(b"<html>"))


def digit_problem(answer):
    p = answer.get("prediction")
    if p is None:
        return None if answer.get("reason") in ("blank", "not_a_digit") else f"prediction null without a reason: {answer}"
    if not (isinstance(p, int) and 0 <= p <= 9 and 0 <= answer["confidence"] <= 1):
        return f"not a digit answer: {answer}"
    probabilities = answer.get("probabilities")
    if probabilities is not None and (len(probabilities) != 10 or not all(0 <= x <= 1 for x in probabilities)):
        return f"probabilities {probabilities}"
    return None


def answer_problem(path, answer):
    if not isinstance(answer.get("model"), str):
        return f"no model in {answer!r:.200}"
    if path == "/predict":
        return digit_problem(answer)
    if path == "/predict/batch":
        for entry in answer.get("results", [None]):
            if not isinstance(entry, dict) or "index" not in entry:
                return f"batch entry {entry!r:.200}"
            if "error" not in entry and digit_problem(entry):
                return digit_problem(entry)
        return None
    number, digits = answer.get("number"), answer.get("digits")
    if not isinstance(digits, list) or any(len(d.get("box", ())) != 4 or digit_problem(d) for d in digits):
        return f"read answer {answer!r:.300}"
    if number is None:
        return None if answer.get("reason") in ("blank", "not_a_digit") else f"number null without a reason: {answer}"
    return None if number == "".join(str(d["prediction"]) for d in digits) else f"number {number} vs {digits}"


# --- sending ---------------------------------------------------------------------------------------------

class Sender:
    """One keep-alive connection per thread; a connection the server closed is opened again."""

    def __init__(self, host, port):
        self.host, self.port, self.local = host, port, threading.local()

    def send(self, case):
        for attempt in (1, 2):
            connection = getattr(self.local, "connection", None) or http.client.HTTPConnection(self.host, self.port, timeout=30)
            self.local.connection = connection
            start = time.perf_counter()
            try:
                connection.request(case.method, case.path, body=case.body, headers=case.headers)
                response = connection.getresponse()
                body = response.read()
                ms = (time.perf_counter() - start) * 1e3
                if response.will_close or "Content-Length" in case.headers:  # a body sent only in part
                    connection.close()
                    self.local.connection = None
                return Result(case, response.status, response.getheader("Content-Type", ""), body, ms)
            except (http.client.HTTPException, OSError) as e:
                connection.close()
                self.local.connection = None
                if attempt == 2 or not isinstance(e, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)):
                    return Result(case, None, "", f"{type(e).__name__}: {e}".encode(), (time.perf_counter() - start) * 1e3)


def run_cases(sender, todo, threads):
    if threads == 1:
        return [sender.send(case) for case in todo]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(sender.send, todo))


def fuzz(port, server, n, seed, threads, goal=None):
    """Bombs first (sequential, timed, memory read around them), then n cases -> report dict. server: the
    gunicorn process whose workers are watched, or a list of them (the backends behind a proxy)."""
    servers = server if isinstance(server, list) else [server]

    def pids():
        return sorted(pid for s in servers for pid in worker_pids(s))

    sender = Sender("127.0.0.1", port)
    workers = pids()
    # Warm every worker up before reading memory, each case on a new connection: over one keep-alive
    # connection they all went to one worker, and the other warmed up during the bombs (CI=true once
    # read 133 MB before them and 165 MB after).
    for case in cases(40, seed + 1):
        Sender("127.0.0.1", port).send(case)
    rss_before = rss_mb(workers)
    bomb_results = run_cases(sender, bomb_cases(), 1)
    rss_after_bombs = rss_mb(workers)
    results = run_cases(sender, cases(n, seed), threads)
    goal = goal or targets("fuzz_uploads")
    slow_bombs = [r for r in bomb_results if r.ms >= goal["bomb_ms"]]
    slow = [r for r in bomb_results + results if r.ms >= goal["answer_ms"]]
    problems = [(r, problem(r)) for r in bomb_results + results if problem(r)]
    return {"goal": goal, "results": results, "bombs": bomb_results, "problems": problems, "slow_bombs": slow_bombs,
            "slow": slow,
            "workers_before": workers, "workers_after": pids(),
            "rss_before": rss_before, "rss_after_bombs": rss_after_bombs, "rss_end": rss_mb(pids())}


def report(outcome):
    lines = [f"{'family':<24} {'cases':>6}  {'statuses':<44} {'problems':>8} {'p99 ms':>7} {'max ms':>7}"]
    groups = {}
    for r in outcome["results"]:
        groups.setdefault(r.case.family, []).append(r)
    groups["bombs (sequential)"] = outcome["bombs"]
    bad = Counter(r.case.family for r, _ in outcome["problems"])
    for family, rows in groups.items():
        statuses = Counter(r.status for r in rows)
        shown = " ".join(f"{s}:{c}" for s, c in sorted(statuses.items(), key=lambda x: -x[1])[:6])
        ms = [r.ms for r in rows]
        count = sum(v for k, v in bad.items() if k == family or (family.startswith("bombs") and k.startswith("bomb")))
        lines.append(f"{family:<24} {len(rows):>6}  {shown:<44} {count:>8} {np.percentile(ms, 99):>7.1f} {max(ms):>7.1f}")
    total = len(outcome["results"]) + len(outcome["bombs"])
    lines.append(f"total {total} cases, {sum(r.status is not None and r.status >= 500 for r in outcome['results'] + outcome['bombs'])} "
                 f"answered 5xx, {len(outcome['problems'])} broke the contract")
    lines.append(f"refused by gunicorn before the app (HTML, malformed HTTP): "
                 f"{sum(gunicorn_refusal(r) for r in outcome['results'])}")
    lines.append(f"bombs: {len(outcome['bombs'])}, slowest {max(r.ms for r in outcome['bombs']):.1f} ms "
                 f"(limit {outcome['goal']['bomb_ms']}), {len(outcome['slow_bombs'])} slower; workers' RSS {outcome['rss_before']:.0f} MB "
                 f"before, {outcome['rss_after_bombs']:.0f} MB after the bombs, {outcome['rss_end']:.0f} MB at the end")
    lines.append(f"answers slower than {outcome['goal']['answer_ms']} ms: {len(outcome['slow'])}"
                 + "".join(f"\n  SLOW {r.ms:.0f} ms {r.case.family} {r.case.path}" for r in outcome["slow"][:5]))
    lines.append(f"workers: {outcome['workers_before']} before, {outcome['workers_after']} after "
                 f"({'none died' if outcome['workers_before'] == outcome['workers_after'] else 'REPLACED'})")
    for r, why in outcome["problems"][:20]:
        lines.append(f"  PROBLEM {r.case.family} {r.case.method} {r.case.path[:60]}: {why}")
    return "\n".join(lines)


def passed(outcome):
    goal = outcome["goal"]
    memory_ok = outcome["rss_after_bombs"] <= outcome["rss_before"] * (1 + goal["rss_growth"]) + goal["rss_slack_mb"]
    return (not outcome["problems"] and not outcome["slow_bombs"] and not outcome["slow"] and memory_ok
            and outcome["workers_before"] == outcome["workers_after"])
