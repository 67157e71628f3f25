"""`make repro`: `dvc repro` with progress a person can follow, and the whole run in data/run.log.

    python -m pipeline.run                 # dvc repro, as `make repro` runs it
    python -m pipeline.run --profile full  # params.yaml composed with conf/experiment/full.yaml first

Composes params.yaml from conf/ (the profile: `quick`, the default, or `full`), then runs `dvc repro` and
prints each stage as it starts ("stage 4 of 12: train@robust_fast, 1 min 32 s in") and as it ends (its
time), dvc's and the stages' own lines in between, and at the end every stage's time. Everything printed
also goes to data/run.log. The exit status is dvc's.
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.params import PARAMS, compose_params, dump

LOG = Path("data/run.log")
PROFILES = {"quick": [], "full": ["+experiment=full"]}
STARTED = re.compile(r"^Running stage '([^']+)'")
SKIPPED = re.compile(r"^Stage '([^']+)' didn't change, skipping")


def clock(seconds) -> str:
    """42 s, 3 min 05 s, 1 h 02 min: elapsed times and ETAs as a person reads them."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def stage_names() -> list:
    """Every stage of dvc.yaml as `dvc repro` knows it (foreach stages expanded: train@dense, ...)."""
    out = subprocess.run(["dvc", "stage", "list", "--name-only"], capture_output=True, text=True, check=True)
    return out.stdout.split()


class Run:
    """Reads dvc's output line by line: echoes it, logs it, and keeps the stage clock."""

    def __init__(self, stages, log, out=sys.stdout):
        self.stages, self.log, self.out = stages, log, out
        self.started = time.perf_counter()
        self.current, self.current_started, self.seen, self.times = None, None, 0, {}

    def say(self, line):
        self.out.write(line + "\n")
        self.out.flush()
        self.log.write(line + "\n")
        self.log.flush()

    def _end_current(self):
        if self.current:
            self.times[self.current] = time.perf_counter() - self.current_started
            self.say(f"== {self.current} done in {clock(self.times[self.current])}")
            self.current = None

    def line(self, text):
        text = text.rstrip("\n")
        started, skipped = STARTED.match(text), SKIPPED.match(text)
        if started or skipped:
            self._end_current()
            self.seen += 1
        if started:
            self.current, self.current_started = started.group(1), time.perf_counter()
            self.say(f"== stage {self.seen} of {len(self.stages)}: {self.current}, "
                     f"{clock(time.perf_counter() - self.started)} in")
        elif skipped:
            self.times[skipped.group(1)] = 0.0
            self.say(f"== stage {self.seen} of {len(self.stages)}: {skipped.group(1)} unchanged, skipped")
        elif text.strip():
            self.say(text)

    def finish(self, status):
        self._end_current()
        ran = {k: v for k, v in self.times.items() if v}
        self.say(f"== dvc repro {'finished' if status == 0 else f'failed (exit {status})'} in "
                 f"{clock(time.perf_counter() - self.started)}; {len(ran)} stage(s) ran, "
                 f"{len(self.times) - len(ran)} unchanged")
        for name, seconds in ran.items():
            self.say(f"   {name:<24} {clock(seconds):>14}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("dvc_args", nargs="*", help="passed to dvc repro (e.g. a stage name)")
    args = parser.parse_args(argv)
    params = dump(compose_params(PROFILES[args.profile]))
    if not PARAMS.exists() or PARAMS.read_text() != params:
        PARAMS.write_text(params)
        print(f"params.yaml composed from conf/ for the {args.profile} profile")
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with LOG.open("w") as log:
        run = Run(stage_names(), log)
        run.say(f"== dvc repro, {args.profile} profile: {len(run.stages)} stages; this log: {LOG}")
        # Line-buffered child; Ctrl-C reaches dvc too (same process group): it stops its stage and exits.
        child = subprocess.Popen(["dvc", "repro", *args.dvc_args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            for text in child.stdout:
                run.line(text)
            status = child.wait()
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            status = child.wait()
            run.say("== interrupted: the stage that was running is redone next time, never registered")
            status = status or 130
        run.finish(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
