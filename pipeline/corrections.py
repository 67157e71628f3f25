"""Stage `corrections`: users' reviewed corrections, exported as a versioned dataset.

    python -m pipeline.corrections

The server keeps every correction a user sends ("Wrong? It was ...") in the feedback store, `pending`
until the operator reviews it (`python -m serve feedback ...`). A correction is untrusted input: anyone
can send thousands of wrong labels. So this stage takes only `accepted` ones, and only those with an id
up to `corrections.watermark` (conf/corrections/default.yaml, in params.yaml): raising the watermark in
a commit is how reviewed corrections enter training, and the export is the same for everyone at that
commit. Pending or rejected ones never leave the store, whatever their number.

Each correction goes to `train` (for the variants with `corrections: true`) or to `heldout` (every
variant's evaluate reports its accuracy on them) by its upload's sha256, so it never moves between the
two when the watermark rises. MNIST's validation and test splits are untouched.

Writes data/corrections/{train,heldout}.npy (uint8 [N, 28, 28], white on black as the server normalised
them) and {train,heldout}_labels.npy (int64, 10 = not a digit): plain .npy, whose bytes depend only on
the content (np.savez stamps the time into its zip), and reports/corrections.json (the counts).

The store is FEEDBACK_DB_URL, else SQLite in FEEDBACK_DIR (default feedback/): digits.contract names
the default for the server and this stage alike. pipeline/ does not import serve/: the table is read
here with a plain SELECT. No store and watermark 0 is an empty export; no store and a watermark above 0
is an error (the commit says corrections exist that this machine cannot see).
"""
import json
import os
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import sqlalchemy as sa

from digits.contract import CLASSES, feedback_url
from pipeline.params import load

OUT_DIR = Path("data/corrections")
SUMMARY = Path("reports/corrections.json")
SPLITS = ("train", "heldout")
HELDOUT_ONE_IN = 5  # a correction is held out when the first 32 bits of its upload's sha256 are 0 mod this

# serve/store.py owns the schema (and its Alembic migrations); these are the table and columns read here.
TABLE, ID, SHA256, LABEL, IMAGE28, STATE = "corrections", "id", "sha256", "label", "image28", "state"
QUERY = sa.text(f"SELECT {ID}, {SHA256}, {LABEL}, {IMAGE28} FROM {TABLE} "
                f"WHERE {STATE} = 'accepted' AND {ID} <= :watermark ORDER BY {ID}")


class StoreMissing(RuntimeError):
    pass


def store_url() -> str:
    return feedback_url(os.environ.get("FEEDBACK_DB_URL", ""), os.environ.get("FEEDBACK_DIR", ""))


def accepted(url, watermark) -> list[tuple]:
    """(id, sha256, label, image28 bytes) of the accepted corrections with id <= watermark, in id order."""
    if watermark <= 0:
        return []  # nothing asked for: no store needed
    shown = sa.engine.make_url(url).render_as_string(hide_password=True)
    if url.startswith("sqlite:///") and not Path(unquote(url[len("sqlite:///"):])).is_file():
        raise StoreMissing(f"corrections.watermark is {watermark} but there is no feedback store at {shown}; "
                           f"set FEEDBACK_DB_URL or FEEDBACK_DIR to the server's, or lower the watermark")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(TABLE):
                raise StoreMissing(f"corrections.watermark is {watermark} but {shown} holds no {TABLE} table")
            return [tuple(row) for row in conn.execute(QUERY, {"watermark": watermark})]
    finally:
        engine.dispose()


def held_out(sha256: str) -> bool:
    return int(sha256[:8], 16) % HELDOUT_ONE_IN == 0


def split(rows) -> dict:
    """rows -> {"train": (x, y), "heldout": (x, y)}: x uint8 [N, 28, 28], y int64 (10: not a digit)."""
    out = {}
    for name in SPLITS:
        picked = [r for r in rows if held_out(r[1]) == (name == "heldout")]
        x = np.array([np.frombuffer(r[3], np.uint8).reshape(28, 28) for r in picked], np.uint8).reshape(-1, 28, 28)
        y = np.array([CLASSES.index(r[2]) for r in picked], np.int64)
        out[name] = x, y
    return out


def export(url, watermark, out_dir=OUT_DIR, summary_path=SUMMARY) -> dict:
    """Write the export; returns the summary (also written to summary_path)."""
    rows = accepted(url, watermark)
    out_dir, summary_path = Path(out_dir), Path(summary_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"watermark": watermark, "highest_id": max((r[0] for r in rows), default=0)}
    for name, (x, y) in split(rows).items():
        for path, array in ((out_dir / f"{name}.npy", x), (out_dir / f"{name}_labels.npy", y)):
            partial = path.with_suffix(".partial.npy")
            np.save(partial, array)
            partial.replace(path)
        summary[name] = {"n": int(len(y)), "by_label": {CLASSES[k]: int((y == k).sum()) for k in np.unique(y)}}
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def load_split(name, directory=OUT_DIR):
    """(x uint8 [N, 28, 28], y int64) of "train" or "heldout"."""
    return np.load(Path(directory) / f"{name}.npy"), np.load(Path(directory) / f"{name}_labels.npy")


def main():
    watermark = int(load()["corrections"]["watermark"])
    try:
        summary = export(store_url(), watermark)
    except StoreMissing as error:
        raise SystemExit(f"corrections: {error}")
    print(f"corrections: accepted up to id {watermark}: {summary['train']['n']} to train, "
          f"{summary['heldout']['n']} held out (highest id taken {summary['highest_id']})")


if __name__ == "__main__":
    main()
