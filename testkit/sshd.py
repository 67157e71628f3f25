"""A private SSH server for tests: Debian's OpenSSH daemon (/usr/sbin/sshd; `make teams-deps` installs
openssh-server) on a free loopback port, with its own configuration, host key, client key and authorized
key, all in a temporary folder made for it and removed after. Nothing of the system's own sshd (its
configuration, keys or service) is read or touched; as root, sshd needs /run/sshd, made when missing as
Debian's service would make it. SFTP only (internal-sftp): what DVC's ssh remote speaks.

sshd can only log in as the user it runs as unless it runs as root: as root it logs in as root
(`PermitRootLogin prohibit-password`: by key only), as anyone else as that user. Either way `user` says
who, and only that user, by the generated key, may log in.

    with Sshd() as sshd:
        sshd.url("/srv/remote")      # ssh://USER@127.0.0.1:PORT/srv/remote
        sshd.keyfile                 # the client's private key
        sshd.known_hosts_line        # "[127.0.0.1]:PORT ssh-ed25519 AAAA...": the host key, for ~/.ssh/known_hosts

DVC's ssh remote does not check the server's host key (sshfs passes asyncssh known_hosts=None; docs/teams.md):
a client needs no known_hosts entry for this server, and an OpenSSH client needs one (`known_hosts_line`).
"""
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from testkit.server import free_port

SSHD = Path(os.environ.get("SSHD", "/usr/sbin/sshd"))
ADVICE = ("OpenSSH's server is not installed (no {sshd}): `make teams-deps` installs it "
          "(Debian's openssh-server)")
PRIVSEP_DIR = Path("/run/sshd")  # compiled into Debian's sshd: it must exist when sshd runs as root


def _login() -> str:
    """The effective user's name (not $USER: sshd logs in whoever the process is)."""
    return pwd.getpwuid(os.geteuid()).pw_name


class SshdError(RuntimeError):
    pass


class Sshd:
    """A context manager: starts sshd on enter (ready to accept connections), stops it on exit."""

    def __init__(self, folder=None, keep=False, start_timeout=20):
        self.folder = Path(folder) if folder else None
        self.keep = keep  # leave the folder (its log) after exit
        self.start_timeout = start_timeout
        self.host, self.port, self.user = "127.0.0.1", None, _login()
        self.process = None

    # --- what a client needs --------------------------------------------------------------------------------

    @property
    def keyfile(self) -> Path:
        return self.folder / "client_ed25519"

    @property
    def log(self) -> Path:
        return self.folder / "sshd.log"

    @property
    def known_hosts_line(self) -> str:
        algorithm, key = (self.folder / "host_ed25519.pub").read_text().split()[:2]
        return f"[{self.host}]:{self.port} {algorithm} {key}"

    def url(self, path) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}/{str(path).lstrip('/')}"

    def log_text(self, tail=6000) -> str:
        try:
            return self.log.read_text(errors="replace")[-tail:]
        except OSError:
            return "(no log)"

    # --- lifecycle -----------------------------------------------------------------------------------------

    def __enter__(self):
        if not os.access(SSHD, os.X_OK):
            raise SshdError(ADVICE.format(sshd=SSHD))
        if shutil.which("ssh-keygen") is None:
            raise SshdError("ssh-keygen is not on PATH: `make teams-deps` (Debian's openssh-client comes with "
                            "openssh-server)")
        made = self.folder is None
        if made:
            self.folder = Path(tempfile.mkdtemp(prefix="digits-sshd-"))
        self._made = made
        try:
            self._configure()
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: the listener exits; sessions' children follow
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if getattr(self, "_made", False) and not self.keep:
            shutil.rmtree(self.folder, ignore_errors=True)
        return False

    def _keygen(self, path, comment):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                       check=True, capture_output=True, text=True)

    def _configure(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        host_key = self.folder / "host_ed25519"
        self._keygen(host_key, "digits-test-sshd-host")
        self._keygen(self.keyfile, f"digits-test-{self.user}")
        authorized = self.folder / "authorized_keys"
        authorized.write_text(Path(f"{self.keyfile}.pub").read_text())
        authorized.chmod(0o600)
        self.port = free_port()
        as_root = os.geteuid() == 0
        if as_root:
            PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)  # what Debian's service unit makes at boot
        (self.folder / "sshd_config").write_text("\n".join([
            "# A private sshd for tests (testkit/sshd.py): loopback only, this folder's keys only",
            f"ListenAddress {self.host}:{self.port}",
            f"HostKey {host_key}",
            f"PidFile {self.folder / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized}",
            f"AllowUsers {self.user}",
            f"PermitRootLogin {'prohibit-password' if as_root else 'no'}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "UsePAM no",
            "StrictModes no",  # the keys live under the temporary folder, not a home's ~/.ssh
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "PermitTTY no",
            "PrintMotd no",
            "UseDNS no",
            "MaxStartups 50",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
            "",
        ]))

    def _start(self):
        config = self.folder / "sshd_config"
        checked = subprocess.run([str(SSHD), "-t", "-f", str(config)], capture_output=True, text=True)
        if checked.returncode != 0:
            raise SshdError(f"sshd refused its configuration ({config}):\n{checked.stderr}")
        # -D: stay in the foreground (our child, stopped by __exit__); -E: log to a file, not syslog
        self.process = subprocess.Popen([str(SSHD), "-D", "-f", str(config), "-E", str(self.log)],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SshdError(f"sshd exited ({self.process.returncode}) as it started; its log, {self.log}:\n"
                                f"{self.log_text()}")
            if self._banner().startswith(b"SSH-2.0-"):
                return
            time.sleep(0.1)
        raise SshdError(f"sshd did not answer on {self.host}:{self.port} within {self.start_timeout} s; its log, "
                        f"{self.log}:\n{self.log_text()}")

    def _banner(self) -> bytes:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                return s.recv(64)
        except OSError:
            return b""


def unreachable_url(path="/remote") -> str:
    """An ssh:// URL where nothing listens: a free loopback port, bound by no one."""
    return f"ssh://{_login()}@127.0.0.1:{free_port()}/{path.lstrip('/')}"
