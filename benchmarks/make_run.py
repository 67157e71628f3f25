"""A new user's first `make run`, timed: git clone, then `make run` in the clone (a new .venv, install,
`dvc repro` of the quick profile, serve), until the server's /ready answers 200.

    python benchmarks/make_run.py                   # clones this repository's HEAD into a temporary folder
    python benchmarks/make_run.py --keep /tmp/fresh  # keeps the clone (its champion, mlruns/, reports/)

Prints each step's time as it happens (install, every stage, the server's start) and a table at the end;
the clone's data/run.log holds the pipeline's own. Committed work only (a clone sees HEAD). pip's
cache is whatever this machine has: a first install ever also downloads the wheels. Exits 1 when the
whole takes longer than conf/targets.yaml's make_run.minutes, or the champion's MNIST test accuracy is
under make_run.mnist_test.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from pipeline.run import clock
from testkit import ROOT, targets
from testkit.server import free_port

MARKS = re.compile(r"^== (install: [^\s,]+|stage \d+ of \d+: [^\s,]+|serving)")


def ready(port) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", metavar="DIR", help="clone into DIR (must not exist) and keep it")
    parser.add_argument("--source", default=str(ROOT), help="what to clone (default: this repository)")
    args = parser.parse_args(argv)
    target = targets("make_run")
    clone = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="make-run-")) / "digits"
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MODEL_DIR", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)

    started = time.perf_counter()
    marks = []  # (seconds since start, what began)

    def mark(what):
        marks.append((time.perf_counter() - started, what))
        print(f"[{clock(marks[-1][0]):>10}] {what}", flush=True)

    mark("git clone")
    subprocess.run(["git", "clone", "-q", args.source, str(clone)], check=True)
    mark("make run")
    make = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=clone, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
    tail = []

    def read():
        for line in make.stdout:
            tail.append(line)
            del tail[:-40]
            found = MARKS.match(line)
            if found:
                mark(found.group(1))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = started + 3 * 60 * target["minutes"]
    try:
        while not ready(port):
            if make.poll() is not None or time.perf_counter() > deadline:
                print("".join(tail))
                print(f"make_run: make run {'exited ' + str(make.returncode) if make.poll() is not None else 'timed out'}"
                      " before /ready answered")
                return 1
            time.sleep(1)
        mark("/ready answered")
        total = time.perf_counter() - started
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/model", timeout=5) as answer:
            model = json.load(answer)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGTERM)
            try:
                make.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(make.pid, signal.SIGKILL)
    champion = json.loads((clone / "champion/champion.json").read_text())

    print("\nstep                                    began at    took")
    for (at, what), (until, _) in zip(marks, marks[1:] + [(total, None)]):
        print(f"{what:<38} {clock(at):>10} {clock(until - at):>10}")
    print(f"\ngit clone + make run to /ready: {clock(total)} (target <= {target['minutes']} min)")
    print(f"champion: {champion['variant']} version {champion['version']}, MNIST test {champion['test_accuracy']:.2%}, "
          f"validation {champion['val_accuracy']:.2%}; served: {model.get('name')} {model.get('version')}")
    misses = []
    if total > 60 * target["minutes"]:
        misses.append(f"{clock(total)} > {target['minutes']} min, by {clock(total - 60 * target['minutes'])}")
    if champion["test_accuracy"] < target["mnist_test"]:
        misses.append(f"MNIST test {champion['test_accuracy']:.2%} < {target['mnist_test']:.2%}")
    for miss in misses:
        print(f"MISSED: {miss}")
    if not args.keep:
        shutil.rmtree(clone.parent, ignore_errors=True)
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
