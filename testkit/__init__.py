"""What the tests and the benchmarks share (neither imports the other):

    server      the real server (`python -m serve`, gunicorn) on a free loopback port, alone or behind
                nginx (serve/proxy.py); HTTP helpers
    images      small encoded images to send: a PNG of an array, a digit on a page
    uploads     the robustness suite's renderings of what people upload, from MNIST digits
    robustness  the served model measured on them, the tables, the contact and misses sheets
    hostile     hostile upload cases: bombs, corrupt files, odd formats, broken forms and JSON
    fuzz        hostile cases sent to a real server, and the contract every answer must keep
    load        sustained mixed load, with a worker (or, through the proxy, a backend) killed half-way
    project     a copy of the repository where the real pipeline runs

`targets(name)` is a block of conf/targets.yaml, where every benchmark's targets live.
"""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def targets(name) -> dict:
    return yaml.safe_load((ROOT / "conf" / "targets.yaml").read_text())[name]
