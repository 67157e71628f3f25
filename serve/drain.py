"""Read and throw away the part of a request body the app did not read, before its answer is sent, so that
a client which sends its whole body before reading (Python's urllib, a browser's fetch) gets the answer,
above all the JSON 413 for an upload over MAX_UPLOAD_BYTES, instead of a reset connection.

Why: a body over the limit is refused before a byte of it is read (serve/uploads.py), and gunicorn then
closes the connection (the client said `Connection: close`, as urllib always does, or more than gunicorn's
own 64 kB keep-alive drain is left). Closing a socket with unread bytes in its receive buffer makes the
kernel send a TCP reset, which throws away the answer still waiting in the client's buffer: urllib
raised "Broken pipe" for an 11 MB upload and never saw the 413 (tests/service/test_proxy.py).

Why before the answer, not after: a keep-alive client (nginx in front, serve/proxy.py) sends its next
request as soon as it has the answer. Reading the rest of the old body after that can pull the start of
the next request into gunicorn's buffer, where its poller never sees it: the connection sat idle for its
5 s keep-alive and was closed unanswered (502s under benchmarks/fuzz_uploads.py --proxy). Read first, and
nothing of the next request can be on the socket yet. gunicorn answers `Expect: 100-continue` itself, so
a client that waits for it (curl, for a large body) sends the body and gets the 413 after it.

Bounded, so a client cannot hold a thread for long: a body that declares more than DRAIN_BYTES is not
drained at all (answered at once, then closed, as before), no more than DRAIN_BYTES are read, 64 kB at a
time and none of it kept, for no longer than DRAIN_SECONDS in all, and it stops as soon as the client has
sent nothing for IDLE seconds: one that declared a body and sent only part of it, waiting for an early
answer, gets it after 1 s (benchmarks/fuzz_uploads.py sends 161 of those: a 5 s wait each, before IDLE).
Then the answer goes anyway. Only under gunicorn: its socket is what bounds the time, and its wsgi.input
ends at the body's end (`wsgi.input_terminated`), so the drain never reads into the next request.
Requests without a body are passed through untouched.
"""
import time

CHUNK = 64 * 1024
IDLE = 1.0  # seconds without a byte that end the drain: a sending client is never that quiet on a LAN


def declared_length(environ):
    """The body's Content-Length; None when chunked; 0 when there is no body (or a nonsense length)."""
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return None
    try:
        return max(int(environ.get("CONTENT_LENGTH") or 0), 0)
    except ValueError:
        return 0


def drain(stream, sock, max_bytes, seconds, idle=IDLE):
    """Read `stream` to its end, at most max_bytes and `seconds`, keeping nothing; a read that waits `idle`
    s ends it. -> bytes read; it stops quietly on a timeout or any error of the stream (the answer is sent
    whatever happens here)."""
    deadline, read = time.monotonic() + seconds, 0
    previous = sock.gettimeout()
    try:
        while read < max_bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(min(left, idle))
            piece = stream.read(min(CHUNK, max_bytes - read))
            if not piece:
                break
            read += len(piece)
    except Exception:  # noqa: BLE001 - a timeout, a reset, a malformed chunk: nothing more to read
        pass
    finally:
        try:
            sock.settimeout(previous)
        except OSError:
            pass
    return read


class DrainUnreadBody:
    """WSGI middleware: once the app has made its answer, and before a byte of it is sent, drain what is
    left of the request body (see the module's doc)."""

    def __init__(self, app, max_bytes, seconds):
        self.app, self.max_bytes, self.seconds = app, max_bytes, seconds

    def __call__(self, environ, start_response):
        answer = self.app(environ, start_response)  # gunicorn sends nothing until the answer is iterated
        sock, length = environ.get("gunicorn.socket"), declared_length(environ)
        if sock is not None and environ.get("wsgi.input_terminated") and length != 0 \
                and (length is None or length <= self.max_bytes):
            drain(environ["wsgi.input"], sock, self.max_bytes, self.seconds)
        return answer
