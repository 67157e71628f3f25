"""Schema fuzzing: schemathesis against GET /openapi.json of the real server (gunicorn, `python -m serve`).

    python benchmarks/schema_fuzz.py [--examples 1000] [--seed 1] [--workers 2]

Serves MODEL_DIR (a bundle, what the container runs) or the registered champion, on a free loopback
port, then runs every schemathesis check but positive_data_acceptance (schemathesis.toml and
docs/security.md say why) through all its phases: the document's examples, the coverage phase (boundary
and schema-violating values) and random fuzzing, --examples cases per operation. It fails on any
schemathesis failure and on any traceback in the server's log. tests/service/test_schema.py runs this at
--examples 10; docs/security.md records the full-size run.
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testkit import ROOT
from testkit.server import free_port, server_env, wait_until_ready

CHECKS = ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=1000, help="schemathesis --max-examples per operation")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", default="2", help="gunicorn workers (each has 2 threads)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="schema-fuzz-") as scratch:
        scratch = Path(scratch)
        if not os.environ.get("MODEL_DIR"):  # the registered champion, bundled the way a container carries it
            subprocess.run([sys.executable, "-m", "serve", "bundle", str(scratch / "bundle")], cwd=ROOT, check=True)
        port, log = free_port(), scratch / "server.log"
        # POST /feedback's corrections go to a store in the scratch folder, never the repository's
        env = server_env(os.environ.get("MODEL_DIR") or scratch / "bundle", WORKERS=args.workers, THREADS="2",
                         MODEL_POLL_SECONDS="0", FEEDBACK_DIR=str(scratch / "feedback"), FEEDBACK_DB_URL="",
                         FEEDBACK_RATE="0")  # its own test checks the rate limit: here, the logic behind it
        base = f"http://127.0.0.1:{port}"
        with open(log, "w") as out:
            server = subprocess.Popen([sys.executable, "-m", "serve", "--port", str(port)], cwd=ROOT, env=env,
                                      stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until_ready(base, 90, log, server)
            started = time.perf_counter()
            # cwd=scratch: schemathesis keeps a crash cache in ./.schemathesis; --seed makes a run repeatable.
            fuzz = subprocess.run(
                [sys.executable, "-m", "schemathesis.cli", "--config-file", str(ROOT / "schemathesis.toml"),
                 "--no-color", "run", f"{base}/openapi.json", *CHECKS, "--max-examples", str(args.examples),
                 "--seed", str(args.seed), "--workers", "1", "--generation-database", "none",
                 "--request-timeout", "20", "--output-truncate", "true"], cwd=scratch)
            seconds = time.perf_counter() - started
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        server_log = log.read_text()
    tracebacks = server_log.count("Traceback")
    requests = sum(1 for line in server_log.splitlines() if '"schemathesis/' in line)
    print(f"schema_fuzz: {requests} requests in {seconds:.0f} s, schemathesis exit {fuzz.returncode}, "
          f"{tracebacks} tracebacks in the server log")
    if tracebacks:
        print(server_log[-6000:])
    return 1 if fuzz.returncode or tracebacks else 0


if __name__ == "__main__":
    sys.exit(main())
