"""A private Ray head on loopback, for `make sweep` without a cluster and for the tests.

    python -m ops.ray_head --port 6380 --num-cpus 2     # a head in the foreground until Ctrl-C
    RAY_ADDRESS=127.0.0.1:6380 python -m ops.sweep ...   # in another shell

It is `ray start --head --node-ip-address 127.0.0.1 --port P --num-cpus N --disable-usage-stats
--include-dashboard=false --block`, run in a process group of its own: stopping it ends that group, so only
the processes this head started go (the `ray stop` of a shell kills every Ray process of the user on the
machine). Every port it opens is picked free (Ray's defaults, 6379 and 10001, are Redis's and any other
head's). ops.sweep starts one itself when neither --address nor RAY_ADDRESS names a cluster.
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from testkit.server import free_port

RAY = Path(sys.executable).parent / "ray"  # the virtual environment's CLI: workers run this venv's python


def listening(port, host="127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@dataclass
class Head:
    address: str  # host:port, what ray.init and RAY_ADDRESS take
    port: int
    client_port: int  # Ray Client: ray://127.0.0.1:<client_port>
    process: subprocess.Popen
    temp_dir: Path
    log: Path

    def alive(self) -> bool:
        """Any process of the head's group left (the CLI, GCS, raylet, workers)."""
        try:
            os.killpg(self.process.pid, 0)
            return True
        except ProcessLookupError:
            return False


def start(num_cpus=None, port=None, timeout=120.0, log=None) -> Head:
    """A head on 127.0.0.1 with num_cpus CPUs (default: this machine's); returns once it accepts drivers."""
    port = port or free_port()
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths have a length limit
    log = Path(log) if log else temp_dir / "head.log"
    client_port = free_port()
    cmd = [str(RAY), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
           "--num-cpus", str(num_cpus or os.cpu_count()), "--disable-usage-stats", "--include-dashboard=false",
           "--ray-client-server-port", str(client_port), "--dashboard-agent-listen-port", str(free_port()),
           "--metrics-export-port", str(free_port()),
           "--dashboard-port", str(free_port()), "--temp-dir", str(temp_dir)]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    with open(log, "ab") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    head = Head(f"127.0.0.1:{port}", port, client_port, process, temp_dir, log)
    deadline = time.monotonic() + timeout
    while not listening(port) or not _ready(head):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(head)
            raise RuntimeError(f"ray head did not start (exit {process.poll()}): {log.read_text()[-3000:]}")
        time.sleep(0.5)
    return head


def _ready(head) -> bool:
    """`ray start --block` says so once the node is up."""
    return "Ray runtime started" in head.log.read_text(errors="replace")


def stop(head: Head, timeout=60.0):
    """End the head: SIGTERM to `ray start --block` (it stops what it started, in seconds), then to its
    whole process group if anything is left after `timeout` seconds, then SIGKILL. Removes its temp dir."""
    steps = ((lambda sig: os.kill(head.process.pid, sig), signal.SIGTERM, timeout),
             (lambda sig: os.killpg(head.process.pid, sig), signal.SIGTERM, 20.0),
             (lambda sig: os.killpg(head.process.pid, sig), signal.SIGKILL, 10.0))
    for step, (send, sig, wait) in enumerate(steps):
        if not head.alive():
            break
        if step == 0 and head.process.poll() is not None:  # the CLI is gone, its group is not: no one to wait for
            continue
        try:
            send(sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            head.process.poll()  # reap the CLI: a zombie would keep the group alive
            if not head.alive():
                break
            time.sleep(0.3)
    head.process.poll()
    shutil.rmtree(head.temp_dir, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ops.ray_head", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=None, help="GCS port (default: a free one; not 6379)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs the head offers (default: all)")
    args = parser.parse_args(argv)
    head = start(args.num_cpus, args.port)
    print(f"ray head on {head.address} (Ray Client: ray://127.0.0.1:{head.client_port}); log {head.log}\n"
          f"RAY_ADDRESS={head.address} python -m ops.sweep ...   Ctrl-C stops it", flush=True)
    try:
        while head.process.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stop(head)
        print("ray head stopped")


if __name__ == "__main__":
    main()
