"""nginx in front of two gunicorn backends on one machine: `make serve-proxy`, or

    python -m serve.proxy [--host 127.0.0.1] [--port 8000] [--backend-ports 8001,8002]

nginx buffers whole requests before a backend sees them and times out slow clients (gunicorn has no
header or body read timeout: docs/security.md, "Timeouts"), refuses bodies over MAX_UPLOAD_BYTES and
clients over RATE_LIMIT / RATE_BURST with the app's JSON errors, and sends a request a backend lost to
the other one. Its config is deploy/nginx/digits.conf.template, filled in here into a private folder and
checked with `nginx -t`; nginx runs as a private instance (`-p` that folder, `daemon off`), never the
system service, and listens on HOST:PORT only (loopback by default). The backends listen on loopback
only: they trust X-Forwarded-For (PROXY_HOPS=1), so nothing but nginx may reach them.

Two backends, each one gunicorn worker with 2 threads (`python -m serve --port P` with WORKERS=1,
PROXY_HOPS=1): on 2 cores that is the one process per core `make serve` runs, but under two gunicorn
masters, so that losing one whole server (a crash, a SIGKILL, a restart) leaves the other answering while
nginx retries what the lost one held. Ctrl-C or SIGTERM stops nginx, then both backends (gracefully).

`Proxy` is the same as a context manager, for tests and benchmarks (tests/service/test_proxy.py). Settings:
the app's from the environment (serve/config.py: MAX_UPLOAD_BYTES also sizes nginx's body limit), the
proxy's in serve/config.py's ProxySettings; `NGINX` names the binary (default /usr/sbin/nginx, Debian's:
`make proxy-deps` installs it). This is for a checkout; the container image (deploy/Dockerfile) runs one
gunicorn and leaves the proxy to the ingress in front of it.
"""
import argparse
import http.client
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from serve.config import DEFAULT_MAX_UPLOAD_BYTES, ProxySettings

HERE = Path(__file__).resolve().parent.parent  # the checkout: the backends run its serve/, like this module
TEMPLATE = HERE / "deploy" / "nginx" / "digits.conf.template"
NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")
ADVICE = "`make proxy-deps` installs it (apt-get install nginx), or set NGINX to its path"


class ProxyError(RuntimeError):
    """nginx missing or refusing its config, or a backend that would not start; the message says which."""


def render(template: str, **values) -> str:
    """The template with each @@NAME@@ replaced by values[name.lower()]; a placeholder left over is an error."""
    for name, value in values.items():
        template = template.replace(f"@@{name.upper()}@@", str(value))
    if "@@" in template:
        raise ProxyError(f"{TEMPLATE.name}: no value for {template[template.index('@@'):].split()[0]}")
    return template


def nginx_config(workdir, host, port, backend_ports, max_upload_bytes, proxy, access_log, error_log) -> str:
    """deploy/nginx/digits.conf.template filled in. `proxy`: a serve.config.ProxySettings."""
    first, second = backend_ports
    return render(TEMPLATE.read_text(), workdir=workdir, host=host, port=port, backend_1=first, backend_2=second,
                  max_upload_bytes=max_upload_bytes, rate_limit=proxy.rate_limit, rate_burst=proxy.rate_burst,
                  access_log=access_log, error_log=error_log)


def answers(port, path, timeout=2.0) -> int | None:
    """The status of GET path on 127.0.0.1:port, None when nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def stop(process, sig, timeout):
    """Signal a process we started (its whole group: gunicorn's workers too) and wait; kill it past timeout."""
    if process.poll() is not None:
        return process.returncode
    os.killpg(process.pid, sig)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait()


class Proxy:
    """nginx on host:port in front of gunicorn backends on backend_ports, all started on enter (once each
    answers) and stopped on exit. env: the backends' environment (default: this process's), to which
    WORKERS=1, PROXY_HOPS=1, HOST and PORT are added; `settings`: ProxySettings (default: from the
    environment). logs: a folder for backend-PORT.log, nginx-access.log and nginx-error.log; None: the
    backends and nginx write to this process's stdout and stderr. start_backends=False: only nginx, in front
    of backends already answering on backend_ports (another Proxy's), left running on exit."""

    def __init__(self, host="127.0.0.1", port=8000, backend_ports=(8001, 8002), env=None, settings=None,
                 logs=None, threads=2, start_backends=True):
        self.host, self.port, self.backend_ports = host, port, tuple(backend_ports)
        self.env, self.settings, self.logs, self.threads = env, settings or ProxySettings(), logs, threads
        self.start_backends = start_backends
        self.backends, self.nginx, self.workdir = [], None, None
        # One key for the answer ids of both backends (serve/answer_id.py), when the environment gives none:
        # a POST /feedback may reach the other backend than the /predict whose id it sends.
        self.secret = secrets.token_hex(32)

    @property
    def base(self):
        return f"http://{self.host}:{self.port}"

    def _output(self, name):
        return open(Path(self.logs) / name, "ab") if self.logs else None  # noqa: SIM115 (handed to the child)

    def _spawn(self, command, env, log):
        out = self._output(log)
        try:  # its own process group: signals from the terminal reach only us, and we stop it in order
            return subprocess.Popen(command, cwd=HERE, env=env, stdout=out,
                                    stderr=subprocess.STDOUT if out else None, start_new_session=True)
        finally:
            if out:
                out.close()

    def write_config(self):
        """The filled-in config in a fresh private folder, checked with `nginx -t`; -> its path."""
        if not (shutil.which(NGINX) or Path(NGINX).is_file()):
            raise ProxyError(f"nginx is missing ({NGINX}): {ADVICE}")
        self.workdir = Path(tempfile.mkdtemp(prefix="digits-proxy-"))
        # nginx started as root runs its worker as `nobody`, which must reach its temp folders in here.
        self.workdir.chmod(0o711)
        limit = (self.env if self.env is not None else os.environ).get("MAX_UPLOAD_BYTES")
        limit = int(limit) if limit else DEFAULT_MAX_UPLOAD_BYTES  # the backends' limit is nginx's
        logs = Path(self.logs) if self.logs else None
        conf = self.workdir / "nginx.conf"
        conf.write_text(nginx_config(
            self.workdir, self.host, self.port, self.backend_ports, limit, self.settings,
            access_log=f"{logs / 'nginx-access.log'} digits" if logs else "/dev/stdout digits",
            error_log=logs / "nginx-error.log" if logs else "stderr"))
        check = subprocess.run([NGINX, *self._nginx_args(conf), "-t", "-q"], capture_output=True, text=True)
        if check.returncode != 0:
            raise ProxyError(f"nginx -t refused {conf}:\n{check.stderr}")
        return conf

    def _nginx_args(self, conf):
        return ["-p", str(self.workdir), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"]

    def start_backend(self, port):
        env = {**(self.env if self.env is not None else os.environ), "HOST": "127.0.0.1", "PORT": str(port), "WORKERS": "1",
               "THREADS": str(self.threads), "PROXY_HOPS": "1"}
        env["FEEDBACK_SECRET"] = env.get("FEEDBACK_SECRET") or self.secret
        return self._spawn([sys.executable, "-m", "serve", "--port", str(port)], env, f"backend-{port}.log")

    def wait_until_answering(self, seconds=90):
        """Until every backend's /ready answers 200, then nginx's /health (asked before the backends are up,
        nginx would count them failed for fail_timeout); a process that exits is an error."""
        deadline = time.monotonic() + seconds
        backends = self.backends or [None] * len(self.backend_ports)  # None: not ours, already answering
        for waiting in ([(p, port, "/ready") for p, port in zip(backends, self.backend_ports)],
                        [(self.nginx, self.port, "/health")]):
            while waiting and time.monotonic() < deadline:
                for process, port, path in list(waiting):
                    if process is not None and process.poll() is not None:
                        name = "nginx" if process is self.nginx else f"the backend on {port}"
                        raise ProxyError(f"{name} exited with {process.returncode}"
                                         + (f" (logs in {self.logs})" if self.logs else ""))
                    if answers(port, path) == 200:
                        waiting.remove((process, port, path))
                time.sleep(0.1)
            if waiting:
                raise ProxyError(f"not answering after {seconds} s: "
                                 + ", ".join(f"127.0.0.1:{port}{path}" for _, port, path in waiting))

    def __enter__(self):
        try:
            conf = self.write_config()
            if self.start_backends:
                self.backends = [self.start_backend(port) for port in self.backend_ports]
            self.nginx = self._spawn([NGINX, *self._nginx_args(conf)], os.environ, "nginx-error.log")
            self.wait_until_answering()
        except BaseException:
            self.close()
            raise
        return self

    def kill_backend(self, index, sig=signal.SIGKILL):
        """Signal backend `index`'s whole process group (master and worker): a server lost at once."""
        os.killpg(self.backends[index].pid, sig)

    def close(self):
        """nginx first (SIGQUIT: it finishes what it is answering), then the backends (SIGTERM: likewise)."""
        codes = {}
        if self.nginx:
            codes["nginx"] = stop(self.nginx, signal.SIGQUIT, 15)
        for port, backend in zip(self.backend_ports, self.backends):
            codes[port] = stop(backend, signal.SIGTERM, 30)
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return codes

    def __exit__(self, *exc):
        self.close()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m serve.proxy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--backend-ports", help="two ports on 127.0.0.1 (default: PORT+1,PORT+2)")
    args = parser.parse_args(argv)
    ports = [int(p) for p in args.backend_ports.split(",")] if args.backend_ports else [args.port + 1, args.port + 2]
    if len(ports) != 2:
        parser.error("--backend-ports takes two ports, e.g. 8001,8002")
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda number, _frame: stopping.append(number))
    settings = ProxySettings()
    try:
        with Proxy(args.host, args.port, ports, settings=settings) as proxy:
            print(f"== nginx on {proxy.base}/ in front of gunicorn on 127.0.0.1:{ports[0]} and :{ports[1]}; "
                  f"RATE_LIMIT {settings.rate_limit}/s, RATE_BURST {settings.rate_burst}; Ctrl-C stops all",
                  flush=True)
            while not stopping:
                if any(p.poll() is not None for p in (proxy.nginx, *proxy.backends)):
                    print("serve.proxy: a process exited; stopping the rest", file=sys.stderr)
                    return 1
                time.sleep(0.5)
    except ProxyError as e:
        sys.exit(f"serve.proxy: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
