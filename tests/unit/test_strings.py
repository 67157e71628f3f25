"""pipeline/strings.py: the reader's written numbers are deterministic, labelled right, and drawn from the
split they are given."""
import hashlib

import numpy as np
import pytest

from digits import line as lines
from pipeline import strings


@pytest.fixture(scope="module")
def drawn(mnist, params):
    x, y = mnist["x_train"][:2000], mnist["y_train"][:2000]
    return strings.draw_block(x, y, 40, [42, 4, 1, 0], params), (x, y)


def digest(block) -> str:
    strips, texts, kinds = block
    h = hashlib.sha256()
    for strip, text, kind in zip(strips, texts, kinds):
        h.update(strip.tobytes() + str(strip.shape).encode() + text.encode() + kind.encode())
    return h.hexdigest()


def test_the_same_stream_draws_the_same_strings_and_another_does_not(drawn, params):
    block, (x, y) = drawn
    assert digest(strings.draw_block(x, y, 40, [42, 4, 1, 0], params)) == digest(block)
    assert digest(strings.draw_block(x, y, 40, [42, 4, 1, 1], params)) != digest(block)


def test_strings_are_strips_with_their_text_and_gap_kind(drawn, params):
    (strips, texts, kinds), _ = drawn
    cfg = params["strings"]
    assert len(strips) == len(texts) == len(kinds) == 40
    for strip, text, kind in zip(strips, texts, kinds):
        assert strip.dtype == np.uint8 and strip.shape[0] == lines.HEIGHT and strip.shape[1] % lines.STRIDE == 0
        assert strip.max() > 0
        if text == "?":
            assert kind == "none"
        else:
            assert text.isdigit() and cfg["length"][0] <= len(text) <= cfg["length"][1]
            assert kind == ("single" if len(text) == 1 else kind) and kind in {"single", *cfg["gaps"]["kinds"]}
    assert {"apart", "touching", "overlapping", "mixed"} & set(kinds)


def test_compose_overlaps_digits_by_up_to_a_fifth_when_asked(mnist, params):
    """An `overlapping` string's ink has no blank column between its digits; an `apart` one has."""
    x = mnist["x_train"][:6]
    cfg = {**params["strings"], "slant_deg": 0, "slant_jitter_deg": 0,
           "gaps": {**params["strings"]["gaps"], "shares": [0, 0, 1, 0]}}
    mask, kind = strings.compose(list(x[:4]), np.random.default_rng(0), cfg, [0, 0])
    ink = mask.max(axis=0) > 0.15
    runs = np.count_nonzero(ink & ~np.r_[False, ink[:-1]])
    assert kind == "overlapping" and runs == 1
    cfg["gaps"]["shares"] = [1, 0, 0, 0]
    mask, kind = strings.compose(list(x[:4]), np.random.default_rng(0), cfg, [0, 0])
    ink = mask.max(axis=0) > 0.15
    assert kind == "apart" and np.count_nonzero(ink & ~np.r_[False, ink[:-1]]) >= 4


def test_saved_splits_load_back_strip_by_strip(drawn, tmp_path):
    block, _ = drawn
    strings.save("val", *block, out_dir=tmp_path)
    strips, texts, kinds = strings.load_split("val", tmp_path)
    assert texts == block[1] and kinds == block[2]
    assert all(np.array_equal(a, b) for a, b in zip(strips, block[0]))
