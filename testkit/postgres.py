"""A private PostgreSQL for tests and benchmarks: Debian's server binaries (`make feedback-deps` installs
them), a fresh cluster in a temporary folder, listening on loopback only, stopped and removed after.

initdb refuses to run as root, so as root the cluster belongs to the `postgres` user the package made and
its commands run through `runuser -u postgres --`; as anyone else they run as that user. Trust
authentication on loopback: the cluster lives as long as the test and no other machine can reach it.
"""
import glob
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

from testkit.server import free_port

ADVICE = "PostgreSQL's server is not installed: `make feedback-deps` (Debian's postgresql package)"


def binaries() -> Path | None:
    """The folder of initdb and pg_ctl: PG_BIN, else Debian's newest /usr/lib/postgresql/N/bin."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else (Path(shutil.which("initdb")).parent if shutil.which("initdb") else None)


@contextmanager
def cluster(database="digits"):
    """Yields the SQLAlchemy URL (postgresql+psycopg://) of a new, empty database on a private cluster."""
    bin_dir = binaries()
    if bin_dir is None:
        raise RuntimeError(ADVICE)
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    folder = Path(tempfile.mkdtemp(prefix="digits-pg-"))
    if as_root:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()

    def run(*command):
        subprocess.run([*prefix, *command], check=True, capture_output=True, text=True, cwd=folder)

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-t", "60", "-o",
            f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={folder} -c fsync=off "
            "-c max_connections=100", "start")
        try:
            run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database)
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{e.cmd[len(prefix)]} failed: {e.stderr or e.stdout}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
