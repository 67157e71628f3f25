"""The feedback store: users' corrections, kept durably through SQLAlchemy (serve/feedback.py writes them,
`python -m serve feedback ...` reviews them).

SQLite by default (FEEDBACK_DIR/feedback.db: WAL, so readers never wait for the writer; a busy timeout,
so concurrent writers from several gunicorn workers wait their turn instead of failing; every transaction
BEGIN IMMEDIATE, so a transaction that reads and then writes never fails on the upgrade of its lock);
PostgreSQL when FEEDBACK_DB_URL names one. The schema is Alembic's (serve/migrations/), brought to head
the first time a process opens the store.

Imported only when feedback is used (SQLAlchemy costs ~100 ms to import): /predict never loads it.

One correction per (upload sha256, label): the same image sent back twice with the same label is one
row, however many workers race to write it (a UNIQUE constraint, INSERT ... ON CONFLICT DO NOTHING, then
the row that won is read back). A correction is untrusted: it is `pending` until the operator accepts it;
only `accepted` ones are for training.
"""
import json
import threading
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite

from digits.contract import CLASSES

STATES = ("pending", "accepted", "rejected")
LABELS = CLASSES
MIGRATIONS = Path(__file__).with_name("migrations")

metadata = sa.MetaData()
corrections = sa.Table(  # as serve/migrations/versions/ make it (tests/service/test_feedback_store.py compares)
    "corrections", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("label", sa.String(16), nullable=False),
    sa.Column("answer", sa.String(16)),
    sa.Column("confidence", sa.Float),
    sa.Column("model", sa.String(255)),
    sa.Column("image28", sa.LargeBinary, nullable=False),
    sa.Column("raw", sa.LargeBinary),
    sa.Column("source", sa.String(8), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    sa.Column("reviewed", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("sha256", "label", name="one_correction_per_upload_and_label"),
)


class StoreFull(Exception):
    """FEEDBACK_MAX_PENDING corrections wait for review already."""


class Store:
    """One store (one engine and its pool) per URL and process; `Store.open(url)` shares them."""
    _open, _lock = {}, threading.Lock()

    def __init__(self, url: str):
        self.url = url
        self.engine = engine(url)
        migrate(self.engine)

    @classmethod
    def open(cls, url: str) -> "Store":
        with cls._lock:  # the first feedback of each worker thread must not migrate twice in one process
            if url not in cls._open:
                cls._open[url] = cls(url)
            return cls._open[url]

    def add(self, sha256, label, image28, answer=None, confidence=None, model=None, raw=None, source="id",
            max_pending=None) -> tuple[int, bool]:
        """Keep a correction: (its id, True) when new, (the existing one's id, False) when this upload was
        already corrected to this label. StoreFull when max_pending corrections wait for review (checked
        first, so at most a few over under a race: a limit on growth, not an exact count)."""
        if max_pending is not None:
            with self.engine.connect() as conn:
                if conn.scalar(sa.select(sa.func.count()).where(corrections.c.state == "pending")) >= max_pending:
                    raise StoreFull()
        row = dict(sha256=sha256, label=label, image28=np.asarray(image28, dtype=np.uint8).tobytes(),
                   answer=answer, confidence=confidence, model=model, raw=raw, source=source,
                   state="pending", created=datetime.now(timezone.utc))
        insert = (postgresql.insert if self.engine.dialect.name == "postgresql"
                  else sqlite.insert)(corrections).values(**row)
        insert = insert.on_conflict_do_nothing(index_elements=["sha256", "label"]).returning(corrections.c.id)
        same = sa.select(corrections.c.id).where(corrections.c.sha256 == sha256, corrections.c.label == label)
        with self.engine.begin() as conn:
            new = conn.scalar(insert)
            if new is not None:
                return new, True
            # PostgreSQL waited for the other writer's commit before doing nothing; a new statement sees it
            existing = conn.scalar(same)
        if existing is None:  # the other writer's row was deleted in between: try once more
            return self.add(sha256, label, image28, answer, confidence, model, raw, source)
        return existing, False

    def rows(self, state=None, with_images=False) -> list[dict]:
        columns = [c for c in corrections.c if with_images or c.name not in ("image28", "raw")]
        query = sa.select(*columns).order_by(corrections.c.id)
        if state:
            query = query.where(corrections.c.state == state)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def review(self, ident: int, state: str) -> bool:
        """accepted or rejected; False when there is no such correction."""
        if state not in STATES:
            raise ValueError(f"state is one of {', '.join(STATES)}")
        with self.engine.begin() as conn:
            return conn.execute(corrections.update().where(corrections.c.id == ident).values(
                state=state, reviewed=datetime.now(timezone.utc))).rowcount == 1

    def delete(self, ident: int) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(corrections.delete().where(corrections.c.id == ident)).rowcount == 1

    def stats(self) -> dict:
        """Counts by label, by model version and by review state."""
        out = {"total": 0}
        with self.engine.connect() as conn:
            for name in ("label", "model", "state"):
                column = corrections.c[name]
                counts = {str(k) if k is not None else "unknown": n for k, n in conn.execute(
                    sa.select(column, sa.func.count()).group_by(column).order_by(column))}
                out[f"by_{name}"] = counts
            out["total"] = sum(out["by_state"].values())
        return out

    def export(self, folder, state="accepted") -> int:
        """PNG files of the 28x28s (white ink on black, as MNIST) and labels.jsonl, in id order: the same
        store gives the same files. Returns how many."""
        from PIL import Image

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        rows = self.rows(state, with_images=True)
        with open(folder / "labels.jsonl", "w") as labels:
            for row in rows:
                name = f"{row['id']:08d}.png"
                image = np.frombuffer(row["image28"], dtype=np.uint8).reshape(28, 28)
                Image.fromarray(image).save(folder / name, format="PNG")
                labels.write(json.dumps({"file": name, "id": row["id"], "label": row["label"], "answer": row["answer"],
                                         "model": row["model"], "sha256": row["sha256"], "state": row["state"],
                                         "created": row["created"].isoformat()}) + "\n")
        return len(rows)


def engine(url: str) -> sa.Engine:
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    path = sa.engine.make_url(url).database
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    made = sa.create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(made, "connect")
    def pragmas(connection, _):
        connection.isolation_level = None  # SQLAlchemy's recipe: we say BEGIN ourselves (below)
        for pragma in ("journal_mode=WAL", "busy_timeout=30000", "synchronous=NORMAL", "foreign_keys=ON"):
            connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(made, "begin")
    def immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return made


def migrate(engine: sa.Engine):
    """Alembic's `upgrade head` on this store (serve/migrations/)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
