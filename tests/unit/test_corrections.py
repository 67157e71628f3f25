"""The corrections stage on a real feedback store (serve/store.py's, on SQLite) holding real MNIST digits:
only accepted corrections up to the watermark come out, the same bytes every time, none moving between
train and held-out as the watermark rises; a flood of unreviewed wrong labels never reaches training."""
import hashlib

import numpy as np
import pytest

from digits.contract import CLASSES, sha256
from pipeline import corrections
from serve.store import Store


def add(store, image, label, state):
    """A correction as the server keeps it (its upload's sha256, the 28x28), then reviewed to state."""
    ident, new = store.add(sha256(image.tobytes() + label.encode() + state.encode()), label, image)
    assert new
    if state != "pending":
        assert store.review(ident, state)
    return ident


@pytest.fixture
def store(tmp_path, digits):
    """30 accepted corrections of real digits with their true labels (ids 1..30), 3 of them "not a digit"
    (blank squares), then rejected and pending ones with wrong labels, then 10 more accepted (ids beyond)."""
    url = f"sqlite:///{tmp_path}/feedback/feedback.db"
    s = Store(url)
    x, y = digits
    s.accepted = [add(s, image, str(label), "accepted") for image, label in zip(x, y)]
    s.accepted += [add(s, np.full((28, 28), k, np.uint8), "not_a_digit", "accepted") for k in range(3)]
    s.rejected = [add(s, image, str((label + 1) % 10), "rejected") for image, label in zip(x[:10], y[:10])]
    s.later = [add(s, image[::-1].copy(), str(label), "accepted") for image, label in zip(x[:10], y[:10])]
    yield s
    s.engine.dispose()


def export(url, watermark, folder):
    summary = corrections.export(url, watermark, folder / "data", folder / "summary.json")
    return summary, {name: corrections.load_split(name, folder / "data") for name in corrections.SPLITS}


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_only_accepted_corrections_up_to_the_watermark_come_out_with_their_labels(store, digits, tmp_path):
    watermark = max(store.accepted)  # the rejected ones and the later accepted ones are above it or refused
    summary, out = export(store.url, watermark, tmp_path / "a")
    assert summary["watermark"] == watermark and summary["highest_id"] == watermark
    assert summary["train"]["n"] + summary["heldout"]["n"] == len(store.accepted) == 33
    assert 0 < summary["heldout"]["n"] < summary["train"]["n"]
    x = np.concatenate([out["train"][0], out["heldout"][0]])
    y = np.concatenate([out["train"][1], out["heldout"][1]])
    assert x.dtype == np.uint8 and x.shape == (33, 28, 28) and y.dtype == np.int64
    truth = {hashlib.sha256(image.tobytes()).hexdigest(): int(label) for image, label in zip(*digits)}
    truth |= {hashlib.sha256(np.full((28, 28), k, np.uint8).tobytes()).hexdigest(): CLASSES.index("not_a_digit")
              for k in range(3)}
    assert sorted(truth[hashlib.sha256(image.tobytes()).hexdigest()] for image in x) == sorted(y.tolist())
    assert (y == 10).sum() == 3


def test_the_same_store_and_watermark_give_byte_identical_files(store, tmp_path):
    export(store.url, 25, tmp_path / "a")
    export(store.url, 25, tmp_path / "b")
    first, second = digest(tmp_path / "a"), digest(tmp_path / "b")
    assert first == second and len(first) == 5  # 4 arrays and the summary


def test_raising_the_watermark_adds_rows_and_moves_none_between_train_and_heldout(store, tmp_path):
    low, high = max(store.accepted), max(store.later)
    _, before = export(store.url, low, tmp_path / "low")
    summary, after = export(store.url, high, tmp_path / "high")
    assert summary["train"]["n"] + summary["heldout"]["n"] == len(store.accepted) + len(store.later)
    for name in corrections.SPLITS:  # in id order: the old rows first, unchanged, then the new ones
        n = len(before[name][1])
        assert np.array_equal(after[name][0][:n], before[name][0])
        assert np.array_equal(after[name][1][:n], before[name][1])
    assert len(after["train"][1]) > len(before["train"][1]) or len(after["heldout"][1]) > len(before["heldout"][1])


def test_a_flood_of_wrong_labels_does_not_reach_training_unreviewed(store, digits, tmp_path):
    """500 pending corrections, every one a real digit labelled wrong, and the watermark raised past them all:
    the export is what it was without them."""
    _, clean = export(store.url, 10**9, tmp_path / "clean")
    x, y = digits
    flood = [add(store, np.roll(x[i % len(x)], i // len(x), axis=1), str((y[i % len(x)] + 1 + i % 9) % 10), "pending")
             for i in range(500)]
    assert len(set(flood)) == 500 and len(store.rows("pending")) == 500
    summary, flooded = export(store.url, 10**9, tmp_path / "flooded")
    for name in corrections.SPLITS:
        assert np.array_equal(flooded[name][0], clean[name][0]) and np.array_equal(flooded[name][1], clean[name][1])
    assert summary["highest_id"] == max(store.later) < min(flood)


def test_the_split_is_by_the_uploads_sha256():
    assert corrections.held_out("00000000" + "f" * 56) and not corrections.held_out("00000001" + "0" * 56)
    picks = [corrections.held_out(hashlib.sha256(bytes([i])).hexdigest()) for i in range(256)]
    assert 0.1 < np.mean(picks) < 0.3  # about one in five
    # the same in every process and on every machine (no salted hash): pinned
    assert [i for i in range(40) if picks[i]] == [1, 4, 8, 32]


def test_no_store_is_an_empty_export_at_watermark_0_and_an_error_above(tmp_path):
    url = f"sqlite:///{tmp_path}/nowhere/feedback.db"
    summary, out = export(url, 0, tmp_path / "empty")
    assert summary["train"]["n"] == summary["heldout"]["n"] == summary["highest_id"] == 0
    assert out["train"][0].shape == (0, 28, 28) and out["heldout"][1].shape == (0,)
    with pytest.raises(corrections.StoreMissing, match="watermark is 3"):
        corrections.export(url, 3, tmp_path / "error", tmp_path / "error.json")
    assert not (tmp_path / "nowhere").exists()  # looking did not make a store


def test_the_stage_reads_the_store_the_server_writes(monkeypatch, tmp_path):
    """FEEDBACK_DB_URL, else FEEDBACK_DIR's feedback.db, else feedback/feedback.db: as serve/config.py says."""
    from serve.config import Settings

    monkeypatch.chdir(tmp_path)
    for env in ({}, {"FEEDBACK_DIR": "elsewhere"}, {"FEEDBACK_DB_URL": "postgresql+psycopg://u@h/db"}):
        monkeypatch.delenv("FEEDBACK_DIR", raising=False)
        monkeypatch.delenv("FEEDBACK_DB_URL", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert corrections.store_url() == Settings().feedback_url()
    monkeypatch.delenv("FEEDBACK_DB_URL", raising=False)
    monkeypatch.delenv("FEEDBACK_DIR", raising=False)
    assert corrections.store_url() == f"sqlite:///{tmp_path}/feedback/feedback.db"
