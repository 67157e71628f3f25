"""A team's MLflow tracking server: `python -m ops.tracking_server [--home .tracking] [--port 5000] [--auth]`.

Runs, in the foreground, `mlflow server` with a PostgreSQL backend store (runs and the model registry) and
proxied artifacts in HOME/artifacts: clients log and fetch artifacts through the server and need no storage
credentials. Unless --backend-store-uri (or MLFLOW_BACKEND_STORE_URI) names a PostgreSQL database of one's
own, a private cluster lives in HOME/postgres (Debian's binaries, `make feedback-deps`): created on the
first start, started when not running, listening on 127.0.0.1 only on its own port, its password in
HOME/postgres (never on a command line: libpq reads it from HOME/pgpass). Ctrl-C or SIGTERM stops the
MLflow server and the cluster when this started it. `mlflow db upgrade` runs before every start, so a
newer MLflow migrates the store instead of refusing it.

--auth serves MLflow's basic-auth app: users and permissions live in a PostgreSQL database too
(HOME/basic_auth.ini says which), and the admin's first password comes from MLFLOW_AUTH_ADMIN_PASSWORD; there
is no default. Once the admin exists that variable is ignored: change the password with MLflow's
auth client (docs/teams.md). --allowed-hosts lists the Host headers the server answers (MLflow >= 3.5 refuses
others: name the host teammates type when it is not localhost or a private address).

Tests and other tools start one with `running(...)`, a context manager that yields the server's URL.
"""
import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager, ExitStack
from pathlib import Path

from testkit.postgres import ADVICE, binaries  # the tests' cluster finds the same binaries

DEFAULT_HOME = Path(".tracking")
MLFLOW = Path(sys.executable).parent / "mlflow"  # the virtual environment's
DATABASE, AUTH_DATABASE = "mlflow", "mlflow_auth"


class TrackingError(RuntimeError):
    """The server cannot start; the message says why and what to do."""


def port_free(host, port) -> bool:
    """Whether a server could listen there now (SO_REUSEADDR as servers set it: closed connections in
    TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class Postgres:
    """A private, persistent PostgreSQL cluster in `folder` (data/, log, port, password). initdb refuses to
    run as root, so as root it belongs to the `postgres` user and its commands run through runuser. Host
    connections (127.0.0.1 only) need the password; the Unix socket lives in the folder, 0700, trusted."""

    def __init__(self, folder: Path):
        self.folder = Path(folder).resolve()
        self.data = self.folder / "data"
        self.bin = binaries()
        if self.bin is None or not (self.bin / "pg_ctl").exists():
            raise TrackingError(ADVICE)
        self.as_root = os.geteuid() == 0
        self.prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []

    def run(self, *command, check=True):
        result = subprocess.run([*self.prefix, str(self.bin / command[0]), *command[1:]], capture_output=True,
                                text=True, cwd=self.folder)
        if check and result.returncode != 0:
            raise TrackingError(f"{command[0]} failed: {(result.stderr or result.stdout).strip()}"
                                f"{self.log_tail()}")
        return result

    def log_tail(self) -> str:
        log = self.folder / "log"
        return f"\n{log}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.exists() else ""

    @property
    def port(self) -> int:
        return int((self.folder / "port").read_text())

    @property
    def password(self) -> str:
        return (self.folder / "password").read_text().strip()

    def init(self):
        """initdb a new cluster: a free port from 5433 up, 127.0.0.1 only, scram passwords for TCP."""
        if len(str(self.folder)) > 90:  # the socket's path must fit in 107 bytes
            raise TrackingError(f"{self.folder} is too long a path for PostgreSQL's socket: choose a shorter --home")
        self.folder.mkdir(parents=True, exist_ok=True)
        port = next((p for p in range(5433, 5533) if port_free("127.0.0.1", p)), None)
        if port is None:
            raise TrackingError("no free port for PostgreSQL in 5433-5532")
        pwfile = self.folder / "password"
        pwfile.write_text(secrets.token_urlsafe(24) + "\n")
        (self.folder / "port").write_text(f"{port}\n")
        os.chmod(self.folder, 0o700)
        os.chmod(pwfile, 0o600)
        if self.as_root:
            for path in (self.folder, pwfile, self.folder / "port"):
                shutil.chown(path, "postgres", "postgres")
        if self.as_root and subprocess.run([*self.prefix, "test", "-w", str(self.folder)]).returncode != 0:
            raise TrackingError(f"as root the cluster belongs to the postgres user, who cannot reach {self.folder}: "
                                "make its parent folders searchable (chmod o+x) or choose another --home")
        partial = self.folder / "data.partial"
        shutil.rmtree(partial, ignore_errors=True)
        self.run("initdb", "-D", str(partial), "-U", "postgres", "-E", "UTF8", "--auth-local=trust",
                 "--auth-host=scram-sha-256", f"--pwfile={pwfile}")
        with open(partial / "postgresql.conf", "a") as conf:
            conf.write(f"\n# ops/tracking_server.py\nlisten_addresses = '127.0.0.1'\nport = {port}\n"
                       f"unix_socket_directories = '{self.folder}'\n")
        partial.rename(self.data)  # only a whole cluster is ever found in data/

    def running(self) -> bool:
        return self.data.exists() and self.run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def start(self) -> bool:
        """initdb when missing, start when not running. -> whether this started it."""
        if not self.data.exists():
            self.init()
        if self.running():
            return False
        if not port_free("127.0.0.1", self.port):
            raise TrackingError(f"PostgreSQL's port {self.port} (in {self.folder / 'port'} and "
                                f"{self.data / 'postgresql.conf'}) is taken by another program")
        try:
            self.run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-w", "-t", "60", "start")
        except TrackingError:
            self.stop()  # pg_ctl gave up waiting, the postmaster may not have: none outlives a failed start
            raise
        return True

    def stop(self):
        self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def create_database(self, name):
        connect = ("-h", str(self.folder), "-p", str(self.port), "-U", "postgres")
        found = self.run("psql", *connect, "-d", "postgres", "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if found.stdout.strip() != "1":
            self.run("createdb", *connect, name)

    def url(self, database) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def pgpass(self, path: Path) -> Path:
        """libpq's password file for this cluster, readable by this user only: URLs need no password."""
        path.write_text(f"127.0.0.1:{self.port}:*:postgres:{self.password}\n")
        os.chmod(path, 0o600)
        return path


def ensure_database(url):
    """Create the database an external PostgreSQL URL names, when it does not exist (the auth app's)."""
    import psycopg
    from sqlalchemy.engine import make_url

    target = make_url(url)
    admin = target.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as connection:
            if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target.database,)).fetchone() is None:
                connection.execute(f'CREATE DATABASE "{target.database}"')
    except psycopg.Error as e:
        raise TrackingError(f"cannot reach or create {target.render_as_string()}: {e}") from e


def upgrade(url, env, cwd):
    """`mlflow db upgrade`: a store of an older MLflow is migrated (a new one is created by the server)."""
    result = subprocess.run([str(MLFLOW), "db", "upgrade", url], env=env, capture_output=True, text=True, cwd=cwd)
    if result.returncode != 0:
        raise TrackingError(f"mlflow db upgrade failed:\n{result.stderr[-3000:]}")


def auth_config(home: Path, database_uri) -> Path:
    """HOME/basic_auth.ini (0600): MLflow's basic-auth settings with its users in PostgreSQL. No admin password in
    it; the database's, when --backend-store-uri carries one (the private cluster's never: HOME/pgpass)."""
    path = home / "basic_auth.ini"
    path.touch(0o600)
    os.chmod(path, 0o600)  # before a word is written: an earlier one may have been made readable
    path.write_text("# Written by ops/tracking_server.py at each start. The admin's first password comes from\n"
                    "# MLFLOW_AUTH_ADMIN_PASSWORD; afterwards change it with MLflow's auth client (docs/teams.md).\n"
                    f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {database_uri}\nadmin_username = admin\n"
                    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return path


def secret_key(home: Path) -> str:
    """The key signing the auth app's CSRF tokens, kept in HOME/secret_key (0600) so it outlives restarts;
    MLFLOW_FLASK_SERVER_SECRET_KEY wins (servers sharing one store must share it)."""
    path = home / "secret_key"
    if not path.exists():
        path.touch(0o600)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip()


def wait_until_up(url, process, seconds, log):
    """Until GET /health answers (any HTTP answer: an --allowed-hosts list may refuse our Host header)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise TrackingError(f"mlflow server exited ({process.returncode}):\n{tail(log)}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    raise TrackingError(f"mlflow server did not answer within {seconds} s:\n{tail(log)}")


def tail(log: Path, lines=30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


@contextmanager
def running(*args, **kwargs):
    """Start the tracking server (and, without backend_store_uri, HOME's private PostgreSQL); yields its URL
    (http://host:port); stops the server, then the PostgreSQL it started, on the way out. Arguments: serving's."""
    with serving(*args, **kwargs) as (url, _):
        yield url


@contextmanager
def serving(home=DEFAULT_HOME, host="127.0.0.1", port=5000, auth=False, allowed_hosts=None,
            backend_store_uri=None, auth_database_uri=None, workers=2, log=None, seconds=120):
    """running(), yielding (url, the mlflow server's process). log: a file for the server's output (None:
    HOME/server.log; "-": this process's stdout and stderr)."""
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    backend_store_uri = backend_store_uri or os.environ.get("MLFLOW_BACKEND_STORE_URI")
    if backend_store_uri and not backend_store_uri.startswith("postgresql"):
        raise TrackingError(f"--backend-store-uri {backend_store_uri!r} is not a PostgreSQL URL "
                            "(postgresql+psycopg://user@host:port/database)")
    bootstrapped = home / "auth_admin_created"  # written after the first --auth start: the admin exists
    if auth and not os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD") and not bootstrapped.exists():
        raise TrackingError("--auth needs the admin's password the first time: export MLFLOW_AUTH_ADMIN_PASSWORD=... "
                            "(no default; later starts ignore it, see docs/teams.md to change it)")
    if not port_free(host, port):
        raise TrackingError(f"port {port} on {host} is in use (another tracking server? `make ui`?): choose --port")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_DEFAULT_ARTIFACT_ROOT", "MLFLOW_TRACKING_URI")}
    # MLflow's job runner (three more processes) runs GenAI jobs (trace scoring, prompt optimisation) that
    # digits never submits; the environment can still turn it on.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    with ExitStack() as stack:
        if backend_store_uri:
            auth_database_uri = auth_database_uri or _sibling(backend_store_uri, AUTH_DATABASE)
            if auth:
                ensure_database(auth_database_uri)
        else:
            postgres = Postgres(home / "postgres")
            if postgres.start():
                stack.callback(postgres.stop)
            for name in (DATABASE, AUTH_DATABASE):
                postgres.create_database(name)
            env["PGPASSFILE"] = str(postgres.pgpass(home / "pgpass"))
            backend_store_uri, auth_database_uri = postgres.url(DATABASE), auth_database_uri or postgres.url(AUTH_DATABASE)
        upgrade(backend_store_uri, env, home)
        command = [str(MLFLOW), "server", "--backend-store-uri", backend_store_uri, "--serve-artifacts",
                   "--artifacts-destination", str(home / "artifacts"), "--host", host, "--port", str(port),
                   "--workers", str(workers)]
        if allowed_hosts:
            command += ["--allowed-hosts", ",".join(allowed_hosts)]
        if auth:
            command += ["--app-name", "basic-auth"]
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config(home, auth_database_uri))
            env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secret_key(home))
        log_path = home / "server.log" if log is None else (None if log == "-" else Path(log))
        out = stack.enter_context(open(log_path, "ab")) if log_path else None
        # In HOME: whatever MLflow writes beside itself (a default sqlite:///mlflow.db) stays out of the caller's folder.
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                   start_new_session=log != "-", cwd=home)
        stack.callback(_stop, process)
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        wait_until_up(url, process, seconds, log_path or Path("/nonexistent"))
        if auth:
            bootstrapped.touch()
        yield url, process


def _sibling(url, database) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=database).render_as_string(hide_password=False)


def _hidden(url) -> str:
    """A database URL to print: its password, if it has one, as ***."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _stop(process, seconds=30):
    """SIGTERM to the server's process group (uvicorn and its workers), SIGKILL after `seconds`."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM) if os.getpgid(process.pid) == process.pid else process.terminate()
    except ProcessLookupError:
        return
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ops.tracking_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="the server's folder (default .tracking)")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--auth", action="store_true", help="MLflow's basic-auth app (MLFLOW_AUTH_ADMIN_PASSWORD)")
    parser.add_argument("--allowed-hosts", nargs="+", help="Host headers to answer, e.g. mlflow.team.lan:5000 10.0.0.5:5000")
    parser.add_argument("--backend-store-uri", help="a PostgreSQL of your own (default: HOME/postgres, private)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    def stop(signum, frame):  # once: a second Ctrl-C must not cut short stopping PostgreSQL
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        with serving(args.home, args.host, args.port, args.auth, args.allowed_hosts, args.backend_store_uri,
                     workers=args.workers, log="-") as (url, process):
            shared = f"http://{socket.getfqdn()}:{args.port}" if args.host in ("0.0.0.0", "::") else url
            external = args.backend_store_uri or os.environ.get("MLFLOW_BACKEND_STORE_URI")
            store = _hidden(external) if external else args.home / "postgres"
            print(f"tracking server: {url} (store: {store}, artifacts: "
                  f"{args.home / 'artifacts'}); teammates: export MLFLOW_TRACKING_URI={shared}", flush=True)
            process.wait()
            raise SystemExit(f"tracking server: mlflow server exited ({process.returncode})")
    except KeyboardInterrupt:
        print("tracking server: stopped", file=sys.stderr)
    except TrackingError as e:
        raise SystemExit(f"tracking server: {e}")


if __name__ == "__main__":
    main()
