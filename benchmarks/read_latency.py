"""The number reader's speed in process: a 6-digit written number, decoded page -> strip -> reader -> digits.

    python benchmarks/read_latency.py [--n 200]

Draws n 6-digit numbers as the robustness suite does (testkit/uploads.py `number`, test digits, JPEG
pages 40-160 px high), decodes each once, then times what /read does after decoding with the registered
number reader (digits-reader@champion, one onnxruntime thread, as a server worker): the line's strip
(digits/line.py, the normalise step), the model, and the greedy decode with boxes. Beside it, the same
pages cut into digits and read by the digit champion (digits/segment.py), the path /read took before.
Target (conf/targets.yaml `read`): the median at most `six_digits_ms`; exits 1 when missed or when no
reader is registered.
"""
import argparse
import sys
import time

import numpy as np

from digits import line as lines
from digits.decode import decode
from digits.segment import read as segment_and_read
from pipeline.preprocess import load_split
from serve.model import load_champion, load_reader
from serve.reading import by_reader
from testkit import targets
from testkit.uploads import NUMBERS

TARGET = targets("read")


def six_digit_pages(n, seed=0):
    x, _ = load_split("test")
    rng = np.random.default_rng([seed, 6])
    return [decode(NUMBERS["number"](list(x[rng.choice(len(x), size=6)]), rng)) for _ in range(n)]


def timed(work, pages, repeats=3):
    """Median and 90th percentile ms of work(page) over the pages, each timed `repeats` times (best kept)."""
    times = []
    for page in pages:
        best = np.inf
        for _ in range(repeats):
            started = time.perf_counter()
            work(page)
            best = min(best, time.perf_counter() - started)
        times.append(best * 1000)
    return float(np.median(times)), float(np.percentile(times, 90))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    reader, why, _ = load_reader(threads=1)
    if reader is None:
        sys.exit(f"read_latency: no number reader: {why}")
    champion = load_champion(threads=1)
    pages = six_digit_pages(args.n)

    strips = [lines.line(p) for p in pages]
    model_only = timed(lambda s: reader.predict(lines.batch([s.image])), strips)
    # The whole of /read's reader path after decoding: serve/reading.py's own function, answer and boxes included.
    normalise, whole = timed(lines.line, pages), timed(lambda page: by_reader(page, reader), pages)
    segmenter = timed(lambda page: segment_and_read(page, champion.calibrated), pages)
    widths = [s.image.shape[1] for s in strips]
    print(f"{reader.label}, {args.n} six-digit numbers (strips {min(widths)}-{max(widths)} px wide, median "
          f"{int(np.median(widths))}), one onnxruntime thread; ms median / p90:")
    print(f"  strip (digits/line.py)          {normalise[0]:6.2f} / {normalise[1]:6.2f}")
    print(f"  reader model                    {model_only[0]:6.2f} / {model_only[1]:6.2f}")
    print(f"  strip + model + decode, boxes   {whole[0]:6.2f} / {whole[1]:6.2f}   target <= {TARGET['six_digits_ms']} ms")
    print(f"  segmenter + {champion.label} (before)  {segmenter[0]:6.2f} / {segmenter[1]:6.2f}")
    if whole[0] > TARGET["six_digits_ms"]:
        print(f"MISS: {whole[0]:.2f} ms > {TARGET['six_digits_ms']} ms")
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
