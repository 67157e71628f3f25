"""The robustness table: how the served champion copes with what people really upload, through the API's
own path, on uploads drawn from MNIST *test* digits (testkit/uploads.py; nothing here is tuned on them).

    python benchmarks/robustness.py                        # 200 images per condition, seed 0
    python benchmarks/robustness.py --n 1000 --seed 0 7 11  # the docs' figure: a table per seed, then pooled
    python benchmarks/robustness.py --n 50 --conditions paper_jpeg png16 number blank
    python benchmarks/robustness.py --n 20 --contact-sheet /tmp/sheet.png
    python benchmarks/robustness.py --n 1000 --misses docs/robustness-misses.png   # the hard cases
    python benchmarks/robustness.py --n 1000 --seed 0 7 11 --against-float   # the INT8 copy's rows beside its source's

Serves the registered champion (or MODEL_DIR) in process with `create_app`, and for /read the registered
number reader (digits-reader@champion; READER_NAME=off measures /read cutting numbers into digits). Exits 1 when a row misses
its target (conf/targets.yaml `robustness`), judged on all the seeds' images pooled. With --against-float,
when the served champion is an INT8 copy (serve/model.py, MODEL_PRECISION), its float source reads the same
images too, and a row that differs by more than `int8_row_gap` counts as a miss.
"""
import argparse
import sys
import time

import numpy as np

from serve import create_app
from serve.config import Settings
from serve.model import Registry, load_champion, load_reader
from testkit import ROOT, robustness as rb
from testkit.uploads import ALL


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="images per condition")
    parser.add_argument("--seed", type=int, nargs="+", default=[0],
                        help="one or more seeds: each draws other images (the contact sheet and misses use the first)")
    parser.add_argument("--conditions", nargs="+", choices=ALL, metavar="NAME", help=f"a subset of: {' '.join(ALL)}")
    parser.add_argument("--contact-sheet", metavar="PATH", help="also write a PNG grid of generated images")
    parser.add_argument("--misses", metavar="PATH", help="also write a PNG grid of the champion's misses (hard cases)")
    parser.add_argument("--digits", metavar="NPZ", default=ROOT / "data/prepared/test.npz",
                        help="the digits to draw from (x, y): the prepared MNIST test split by default")
    parser.add_argument("--against-float", action="store_true",
                        help="also run the INT8 copy's float source on the same images, and compare each row")
    args = parser.parse_args()

    champion = load_champion()
    reader, no_reader, _ = load_reader()  # /read's number reader (issue 30); READER_NAME=off: the segmenter alone
    client = create_app(champion, Settings(model_poll_seconds=0), reader=reader).test_client()
    print(f"/read: {reader.label if reader else f'no number reader ({no_reader}): numbers cut into digits'}")
    test = np.load(args.digits)
    if args.contact_sheet:
        rb.contact_sheet(args.contact_sheet, args.seed[0], test["x"], test["y"])
        print(f"wrote {args.contact_sheet}")
    wrong = [] if args.misses else None
    rows_by_seed = {}
    for seed in args.seed:
        started = time.perf_counter()
        rows_by_seed[seed] = rb.evaluate(client, test["x"], test["y"], args.n, seed, args.conditions,
                                         wrong if seed == args.seed[0] else None,
                                         progress=lambda line: print(f"seed {seed}{line}", flush=True))
        print(f"champion {champion.label}, seed {seed}, MNIST test digits, {time.perf_counter() - started:.0f} s\n")
        print(rb.table(rows_by_seed[seed]) + "\n", flush=True)
    if len(args.seed) > 1:
        print(rb.seeds_table(rows_by_seed) + "\n")
    if args.misses:
        shown = rb.misses_sheet(args.misses, wrong)
        print(f"wrote {args.misses}: {shown} of {len(wrong)} misses (at most 8 per condition)")
    missed = rb.misses(rb.pooled(rows_by_seed))
    if args.against_float:
        missed += against_float(champion, rows_by_seed, test, args)
    print(f"{len(missed)} rows miss their target (conf/targets.yaml, pooled over seeds {' '.join(map(str, args.seed))})"
          + "".join(f"\n  MISS {r.condition}: {r.value:.2%}" for r in missed))
    return 1 if missed else 0


def against_float(champion, rows_by_seed, test, args):
    """The float source on the same seeds' images: a table of both, and the rows further apart than int8_row_gap."""
    if champion.quantised_from is None:
        sys.exit(f"--against-float: {champion.label} is not an INT8 copy ({champion.note or 'MODEL_PRECISION=float'})")
    source = Registry(precision="float").load()
    client = create_app(source, Settings(model_poll_seconds=0)).test_client()
    floats = {seed: rb.evaluate(client, test["x"], test["y"], args.n, seed, args.conditions) for seed in args.seed}
    gap = rb.targets("robustness")["int8_row_gap"]
    print(f"| condition | metric | {champion.label} | {source.label} | difference | |\n|---|---|---:|---:|---:|---|")
    apart = []
    for q, f in zip(rb.pooled(rows_by_seed), rb.pooled(floats)):
        far = abs(q.value - f.value) > gap
        apart += [q._replace(notes=f"{q.value - f.value:+.2%} against float")] if far else []
        print(f"| {q.condition} | {q.metric} | {q.value:.2%} | {f.value:.2%} | {q.value - f.value:+.2%} | "
              f"{'APART' if far else ''} |")
    print(f"{len(apart)} rows more than {gap:.1%} from float\n")
    return apart


if __name__ == "__main__":
    sys.exit(main())
