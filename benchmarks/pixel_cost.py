"""What one upload at the pixel limit costs (docs/security.md, "Limits"): a page of the given size with a
block of ink, PNG-encoded (tiny on the wire), through digits.decode + normalise in this process.

    python benchmarks/pixel_cost.py [--megapixels 39.6]
    python benchmarks/pixel_cost.py --megapixels 4 --noise 0.05   # salt-and-pepper: the most blobs to label
    python benchmarks/pixel_cost.py --megapixels 4 --noise 0.5 --read   # what /read does with it

--read segments the page as /read does (digits.segment.read) with a stand-in classifier: the model's own
share, a few hundred 28x28 at most, is milliseconds.

Prints the PNG's size, the seconds of CPU and the peak resident memory it added; exits 1 when either is
over conf/targets.yaml's `pixel_cost`.
"""
import argparse
import io
import resource
import sys
import time

import numpy as np
from PIL import Image

from digits.decode import decode
from digits.normalise import normalise
from digits.segment import read
from testkit import targets


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megapixels", type=float, default=39.6, help="under MAX_IMAGE_PIXELS' 40 by default")
    parser.add_argument("--noise", type=float, metavar="SHARE",
                        help="instead of the ink block, this share of the pixels black at random (a page of specks)")
    parser.add_argument("--read", action="store_true", help="segment it as /read does instead of normalising it")
    args = parser.parse_args(argv)
    height = int((args.megapixels * 1e6 / 1.1) ** 0.5)
    width = int(height * 1.1)
    page = np.full((height, width), 255, np.uint8)
    if args.noise:
        page[np.random.default_rng(0).random(page.shape) < args.noise] = 0
    else:
        page[height // 3: 2 * height // 3, width // 3: 2 * width // 3] = 0
    buffer = io.BytesIO()
    Image.fromarray(page).save(buffer, format="PNG")
    data = buffer.getvalue()
    del page, buffer
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.process_time()
    gray = decode(data, max_pixels=int(args.megapixels * 1e6) + 1)
    if args.read:
        read(gray, lambda batch: np.full((len(batch), 11), 1 / 11, np.float32))
    else:
        normalise(gray)
    seconds = time.process_time() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    goal, added = targets("pixel_cost"), (peak - before) / 1024
    ok = seconds <= goal["cpu_s"] and added <= goal["rss_mib"]
    print(f"{width}x{height} = {width * height / 1e6:.1f} MP, PNG {len(data):,} bytes: {seconds:.2f} s CPU, "
          f"peak RSS +{added:.0f} MiB; {'PASS' if ok else 'MISS'} (targets: <= {goal['cpu_s']} s, "
          f"<= +{goal['rss_mib']} MiB)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
