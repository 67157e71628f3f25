"""nginx in front of two gunicorn backends (serve/proxy.py, deploy/nginx/digits.conf.template) and the
server alone, real processes on loopback: answers like the server alone; an upload over the limit gets its
JSON 413 in urllib, requests, curl and chromium, through the proxy and straight from gunicorn (the drain
of serve/drain.py); a client over the rate gets a JSON 429 and another is unaffected; X-Forwarded-For is
believed only from the proxy; stalled clients do not stop it answering; a backend SIGKILLed under load
loses (almost) nothing. benchmarks/slow_clients.py, fuzz_uploads.py, sustained_load.py --proxy and
rate_limit.py are the full-size runs."""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import requests  # installed with mlflow-skinny (requirements-serve.txt): a client people use, not pinned for us

from serve import proxy as launcher
from serve.drain import DrainUnreadBody, drain
from testkit import fuzz, hostile, load
from testkit.images import on_paper
from testkit.server import free_port, proxied, server_env, start_server, stop_server

# Debian's nginx, never a downloaded one: `make test` installs it (`make proxy-deps`). A missing one is a
# failure here, not a skip, as for the browser (tests/service/test_web.py).
if not Path(launcher.NGINX).exists():
    raise RuntimeError(f"{launcher.NGINX} is missing: {launcher.ADVICE}")
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
LIMIT = 2_000_000  # MAX_UPLOAD_BYTES here: the 413s below send 6 MB, several MB over it
OVER = 6_000_000


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    return tmp_path_factory.mktemp("proxy-logs")


@pytest.fixture(scope="module")
def proxy(bundle, logs):
    with proxied(bundle, logs, MAX_UPLOAD_BYTES=str(LIMIT)) as running:
        yield running


@pytest.fixture(scope="module")
def direct(bundle, logs):
    """gunicorn alone, as `make serve` runs it (PROXY_HOPS=0), one worker; its access log in logs/."""
    port = free_port()
    server = start_server(port, server_env(bundle), workers=1, MAX_UPLOAD_BYTES=str(LIMIT),
                          ACCESS_LOG=str(logs / "direct-access.log"))
    yield port
    assert stop_server(server) == 0


@pytest.fixture(scope="module")
def bases(proxy, direct):
    return {"proxy": proxy.base, "direct": f"http://127.0.0.1:{direct}"}


def test_through_the_proxy_answers_are_the_server_s_own(bases, digits):
    png = on_paper(digits[0][0])
    for path, data in (("/predict", png), ("/health", None), ("/model", None), ("/nowhere", None)):
        answers = []
        for base in bases.values():
            request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "image/png"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    answers.append((response.status, response.headers["Content-Type"], json.load(response)))
            except urllib.error.HTTPError as e:
                answers.append((e.code, e.headers["Content-Type"], json.load(e)))
        if path == "/predict":  # each server signs its answer's id with its own key, at its own time
            assert all(answer[2].pop("id") for answer in answers)
        assert answers[0] == answers[1], path
    assert answers[0][0] == 404 and answers[0][2]["error"]["code"] == "not_found"


# --- an upload over the limit: the JSON 413, whoever the client ------------------------------------

def pieces(body, size=1 << 20):
    return (body[i:i + size] for i in range(0, len(body), size))


def by_urllib(url, body, chunked=False):
    data = pieces(body) if chunked else body  # an iterable of unknown length: urllib sends it chunked
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def by_requests(url, body, chunked=False):
    data = pieces(body) if chunked else body
    answer = requests.post(url, data=data, headers={"Content-Type": "application/octet-stream"}, timeout=20)
    return answer.status_code, answer.content


def by_curl(url, body, chunked=False):
    done = subprocess.run(["curl", "-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}",
                           "-H", "Content-Type: application/octet-stream", "--data-binary", "@-", url,
                           *(["-H", "Transfer-Encoding: chunked"] if chunked else [])],
                          input=body, capture_output=True, check=True)
    answer, _, status = done.stdout.rpartition(b"\n")
    return int(status), answer


@pytest.mark.parametrize("client", [by_urllib, by_requests, by_curl], ids=["urllib", "requests", "curl"])
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
@pytest.mark.parametrize("where", ["proxy", "direct"])
def test_an_upload_over_the_limit_gets_its_json_413_in_every_client(bases, where, client, chunked):
    """urllib sends the whole body before it reads a byte: without serve/drain.py, gunicorn's close with the
    body unread reset the connection and urllib raised "Broken pipe" instead (on main before this test)."""
    status, body = client(bases[where] + "/predict", b"\0" * OVER, chunked)
    assert status == 413 and json.loads(body)["error"]["code"] == "request_entity_too_large", body[:200]


def test_a_client_that_stops_sending_gets_its_413_after_a_second(direct):
    """It declared a body over the limit, sent a little and waits for the answer: the drain stops after
    IDLE (1 s) without a byte, not DRAIN_SECONDS (5 s), and the 413 goes."""
    with socket.create_connection(("127.0.0.1", direct), timeout=10) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                  b"Content-Length: %d\r\n\r\n" % (LIMIT + 100_000) + bytes(1000))
        started = time.perf_counter()
        answer = s.recv(65536)
        waited = time.perf_counter() - started
        head, _, body = answer.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
        while len(body) < length:  # gunicorn writes the headers and the body separately: two segments
            piece = s.recv(65536)
            assert piece, answer + body
            body += piece
    assert head.startswith(b"HTTP/1.1 413") and b"request_entity_too_large" in body, head + body
    assert 0.9 < waited < 2.5, waited


@pytest.fixture(scope="module")
def browser():
    from playwright import sync_api

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` (or apt-get install chromium) installs it")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


FETCH = """async (n) => {
    const answer = await fetch('/predict', {method: 'POST', body: new Blob([new Uint8Array(n)]),
                                            headers: {'Content-Type': 'application/octet-stream'}});
    return [answer.status, answer.headers.get('content-type'), await answer.text()];
}"""


def test_the_browser_gets_the_json_413_too(browser, bases):
    page = browser.new_page()
    try:
        for where, base in bases.items():
            page.goto(base + "/health")  # same origin: fetch('/predict') needs no CORS
            status, content_type, text = page.evaluate(FETCH, OVER)
            assert (status, content_type) == (413, "application/json"), (where, text)
            assert json.loads(text)["error"]["code"] == "request_entity_too_large", where
    finally:
        page.close()


class FakeSocket:
    def __init__(self):
        self.timeouts = []

    def gettimeout(self):
        return None

    def settimeout(self, value):
        self.timeouts.append(value)


class Trickle:
    """A body stream: `size` bytes, each read taking `delay` s; the sizes asked for are kept."""

    def __init__(self, size, delay=0.0):
        self.left, self.delay, self.asked = size, delay, []

    def read(self, n):
        self.asked.append(n)
        time.sleep(self.delay)
        piece, self.left = min(n, self.left), self.left - min(n, self.left)
        return b"\0" * piece


def test_the_drain_is_bounded_in_bytes_and_time_and_keeps_nothing():
    sock = FakeSocket()
    body = Trickle(10_000_000)
    assert drain(body, sock, 3_000_000, 5) == 3_000_000  # stops at the cap, never a piece over 64 kB
    assert max(body.asked) <= 64 * 1024 and sock.timeouts[-1] is None  # the socket's timeout put back
    assert set(sock.timeouts[:-1]) == {1.0}  # no read waits more than IDLE for a byte
    slow, sock = Trickle(10_000_000, delay=0.05), FakeSocket()
    started = time.monotonic()
    assert drain(slow, sock, 50_000_000, 0.3) < 10_000_000
    assert time.monotonic() - started < 0.5
    broken = Trickle(1)
    broken.read = lambda n: (_ for _ in ()).throw(ConnectionResetError())
    assert drain(broken, FakeSocket(), 10, 1) == 0  # a reset ends it quietly: the answer is already sent

    def app(environ, start_response):
        return [b"answer"]

    middleware = DrainUnreadBody(app, max_bytes=1000, seconds=1)
    gunicorn = {"gunicorn.socket": FakeSocket(), "wsgi.input_terminated": True}
    for environ, left in (({"CONTENT_LENGTH": "0"}, 500),  # no body: untouched
                          ({"CONTENT_LENGTH": "5000"}, 500),  # over the cap: answered at once, then closed
                          ({"CONTENT_LENGTH": "500", "gunicorn.socket": None}, 500),  # not gunicorn
                          ({"CONTENT_LENGTH": "500"}, 0),  # drained, before the answer goes
                          ({"HTTP_TRANSFER_ENCODING": "chunked"}, 0)):
        body = Trickle(500)
        assert middleware({**gunicorn, **environ, "wsgi.input": body}, None) == [b"answer"]
        assert body.left == left, environ  # before the answer is iterated, i.e. before gunicorn sends it


def test_hostile_uploads_through_the_proxy_get_no_5xx_and_never_wait(proxy):
    """2,000 of testkit/hostile.py's cases, 4 at a time, through nginx: every answer in the contract
    (testkit/fuzz.py), none a 5xx, none slow. Also the drain's order: nginx reuses its connections to the
    backends and sends the next request as soon as it has an answer; a body drained after the answer
    (gunicorn's own keep-alive drain, or serve/drain.py before it read first) could take in the start of
    the next request, which then waited 5 s unseen and was dropped: 5 s answers, and 502s once both
    backends had been marked failed. With DRAIN_BYTES=0 this failed in 2 of 3 runs of 1,000 cases."""
    results = fuzz.run_cases(fuzz.Sender("127.0.0.1", proxy.port), hostile.cases(2000, seed=0), 4)
    problems = [(r.case.family, r.case.path, fuzz.problem(r)) for r in results if fuzz.problem(r)]
    assert problems == []
    assert {r.status for r in results} >= {200, 400, 405, 413, 414, 415} and max(r.status for r in results) < 500
    assert 429 not in {r.status for r in results}  # the fixture's limit is far above this
    slow = sorted((round(r.ms), r.case.family, r.case.path) for r in results if r.ms > 2000)
    assert slow == []


# --- per-client rate limiting, and whose address the app believes ----------------------------------

def get(port, path, source="127.0.0.1", headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


def test_a_client_over_the_rate_gets_a_json_429_and_another_client_does_not(proxy, logs):
    """A second nginx with a low limit (1 a second, burst 5) in front of the same backends; the clients
    differ by source address (all of 127/8 is loopback)."""
    with launcher.Proxy(port=free_port(), backend_ports=proxy.backend_ports, start_backends=False,
                        settings=launcher.ProxySettings(rate_limit=1, rate_burst=5), logs=logs) as limited:
        first = [get(limited.port, "/health", "127.0.0.3") for _ in range(12)]
        other = [get(limited.port, "/health", "127.0.0.4") for _ in range(5)]
        again = get(limited.port, "/health", "127.0.0.3")
    statuses = [status for status, _, _ in first]
    assert 6 <= statuses.count(200) <= 7 and statuses[:6] == [200] * 6, statuses  # 1 + burst 5, +1 if a second passed
    assert statuses.count(429) >= 5 and again[0] == 429
    for status, content_type, body in first + [again]:
        if status == 429:
            assert content_type == "application/json"
            assert json.loads(body)["error"]["code"] == "too_many_requests"
    assert [status for status, _, _ in other] == [200] * 5  # the other client: its own allowance


def logged_address(log_files, request_id):
    for path in log_files:
        for line in Path(path).read_text().splitlines():
            if f"id={request_id}" in line:
                return line.split()[0]
    raise AssertionError(f"no access line for {request_id} in {log_files}")


def test_x_forwarded_for_is_believed_only_from_the_proxy(proxy, direct, logs):
    spoof = {"X-Forwarded-For": "203.0.113.9"}
    straight, through = uuid.uuid4().hex, uuid.uuid4().hex
    assert get(direct, "/model", headers={**spoof, "X-Request-ID": straight})[0] == 200
    assert get(proxy.port, "/model", "127.0.0.5", {**spoof, "X-Request-ID": through})[0] == 200
    time.sleep(0.2)  # the access lines are written after the answer
    assert logged_address([logs / "direct-access.log"], straight) == "127.0.0.1"  # PROXY_HOPS=0: ignored
    # PROXY_HOPS=1 behind nginx: the address nginx saw (it appends it), not what the client claimed.
    assert logged_address([logs / f"backend-{p}.log" for p in proxy.backend_ports], through) == "127.0.0.5"


# --- slow clients, and a backend lost under load ----------------------------------------------------

def health_seconds(port):
    started = time.perf_counter()
    assert get(port, "/health")[0] == 200
    return time.perf_counter() - started


def test_stalled_clients_do_not_stop_the_proxy_answering(proxy):
    """16 stalled connections, four times the backends' threads: half a request line, or the headers and
    10 of 1,000 body bytes. nginx holds them; gunicorn never sees them (docs/security.md, "Timeouts")."""
    stalls = [b"POST /predict HTT", b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
              b"Content-Length: 1000\r\n\r\n\x89PNG\r\n\x1a\n\0\0"]
    stalled = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(16)]
    try:
        for i, s in enumerate(stalled):
            s.sendall(stalls[i % 2])
        time.sleep(0.5)
        seconds = [health_seconds(proxy.port) for _ in range(5)]
        assert max(seconds) < 1.0, seconds
    finally:
        for s in stalled:
            s.close()


def test_a_backend_killed_under_load_loses_under_a_thousandth_of_the_requests(bundle, mnist, logs):
    pool = load.request_pool(mnist["x_test"], mnist["y_test"], per_kind=8)
    (logs / "kill").mkdir()
    with proxied(bundle, logs / "kill") as running:
        # 3,000 requests, so that the target (< 0.1%) is what is asserted: at 1,000 it would demand none, and
        # a backend SIGKILLed between an answer's headers and its body loses that one request whatever nginx
        # does (it has passed the headers on and cannot retry; docs/benchmarks.md: 1 of 50,000 once).
        outcome = load.run_through(running.port, pool, total=3000, concurrency=8, at=1000,
                                   action=lambda: running.kill_backend(0, signal.SIGKILL))
        survivor = running.backends[1].poll()
    print("\n" + load.report(outcome))
    assert outcome["acted_at"] is not None and survivor is None  # killed mid-load; the other kept serving
    assert sum(outcome["errors"].values()) < 0.001 * outcome["total"], outcome["errors"]


def test_an_answers_id_is_taken_by_either_backend(bundle, digits, tmp_path):
    """Both backends of the proxy sign with one key (serve/proxy.py makes it when the environment has none):
    ids given by one are taken by the other, whichever nginx sends each request to."""
    (tmp_path / "logs").mkdir()
    with proxied(bundle, tmp_path / "logs", FEEDBACK_DIR=str(tmp_path / "store"), FEEDBACK_SECRET="") as running:
        statuses = []
        for i in range(6):  # nginx takes turns between the backends: some ids cross over
            request = urllib.request.Request(running.base + "/predict", data=on_paper(digits[0][i]),
                                             headers={"Content-Type": "image/png"})
            with urllib.request.urlopen(request, timeout=10) as response:
                ident = json.load(response)["id"]
            request = urllib.request.Request(running.base + "/feedback", headers={"Content-Type": "application/json"},
                                             data=json.dumps({"id": ident, "label": "not_a_digit"}).encode())
            with urllib.request.urlopen(request, timeout=10) as response:
                statuses.append(response.status)
    logs = {log.name: log.read_text() for log in (tmp_path / "logs").glob("backend-*.log")}
    assert statuses == [201] * 6
    predicted = {name for name, text in logs.items() if '"POST /predict ' in text}
    corrected = {name for name, text in logs.items() if '"POST /feedback ' in text}
    assert len(logs) == 2 and predicted and corrected and predicted | corrected == set(logs), (predicted, corrected)
    assert not (len(predicted) == len(corrected) == 1 and predicted == corrected)  # some id crossed over
