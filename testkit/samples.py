"""The web page's sample photos: one upload of each field kind, drawn by the robustness suite's own
renderings from the self-test digits (real MNIST digits, serve/selftest/), so a visitor can try the hard
cases in one click. Written once and committed as small JPEGs and PNGs:

    python -m testkit.samples            # writes serve/static/samples/ and its index.json

tests/service/test_web.py clicks each one in the real browser and checks the page reads it right.
"""
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from testkit import ROOT
from testkit import uploads

# kind -> (the digit drawn, the caption). Seeds fixed: the same files every time.
SAMPLES = {
    "ruled_paper": (3, "Notebook paper"),
    "squared_paper": (7, "Squared paper"),
    "form_box": (4, "A form box"),
    "pencil": (2, "Pencil"),
    "coloured_ink": (5, "A sticky note"),
    "low_res": (8, "A thumbnail"),
    "phone_photo": (6, "A phone photo"),
}
SEEDS = {"coloured_ink": 1}  # the first seed that draws a sticky note
PNG = b"\x89PNG"


def write(folder=ROOT / "serve" / "static" / "samples"):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = []
    for kind, (label, caption) in SAMPLES.items():
        digit = np.asarray(Image.open(ROOT / "serve" / "selftest" / f"{label}.png").convert("L"))
        data = uploads.CONDITIONS[kind](digit, np.random.default_rng(SEEDS.get(kind, 0)))
        name = kind + (".png" if data.startswith(PNG) else ".jpg")
        (folder / name).write_bytes(data)
        index.append({"file": name, "label": label, "caption": caption})
    (folder / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return index


if __name__ == "__main__":
    for sample in write(*sys.argv[1:]):
        print(sample)
