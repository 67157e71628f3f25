"""The feedback store on a real SQLite file and a real PostgreSQL (a private cluster on loopback, started
here: testkit/postgres.py; `make feedback-deps` installs the server), and many writers at once through
the real gunicorn server: every correction kept exactly once, none lost."""
import http.client
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import sqlalchemy as sa

from serve.store import Store, corrections
from testkit.images import png_bytes
from testkit.postgres import cluster
from testkit.server import free_port, server_env, start_server, stop_server


@pytest.fixture(scope="module")
def postgres():
    """The URL of an empty database on a private PostgreSQL cluster, for this module."""
    with cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/feedback/feedback.db"
    base = request.getfixturevalue("postgres")  # a fresh database per test on the module's cluster
    name = f"t{random.randrange(10**9)}"
    engine = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    return base.rsplit("/", 1)[0] + "/" + name


def test_the_first_use_makes_the_schema_with_alembic(url):
    store = Store(url)
    inspector = sa.inspect(store.engine)
    assert sorted(inspector.get_table_names()) == ["alembic_version", "corrections"]
    assert [c["name"] for c in inspector.get_columns("corrections")] == [c.name for c in corrections.c]
    unique = inspector.get_unique_constraints("corrections")
    assert [sorted(u["column_names"]) for u in unique] == [["label", "sha256"]]
    with store.engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT version_num FROM alembic_version")) == "0001"
    again = Store(url)  # a second process finds it at head and changes nothing
    assert again.add("a" * 64, "7", np.zeros((28, 28), np.uint8)) == (1, True)
    assert store.add("a" * 64, "7", np.ones((28, 28), np.uint8)) == (1, False)
    with store.engine.begin() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.execute(corrections.update().values(state="maybe"))  # the schema refuses an unknown state
    if url.startswith("sqlite"):
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    store.engine.dispose()
    again.engine.dispose()


def uploads(digits, count):
    """`count` distinct PNG uploads: real digits, each with one pixel of its own changed."""
    images, found = digits[0], []
    for i in range(count):
        image = images[i % len(images)].copy()
        image[i // len(images) // 28 % 28, i // len(images) % 28] ^= 0x80
        found.append(png_bytes(image))
    assert len(set(found)) == count
    return found


def test_many_workers_write_at_once_and_nothing_is_lost_or_kept_twice(url, bundle, digits):
    """2,000 POST /feedback from 16 threads to gunicorn (2 workers x 2 threads): 1,200 distinct corrections
    (800 images, 400 of them with two labels) and 800 repeats of them, shuffled so the repeats race their
    originals. Every distinct one is answered 201 once and kept once; every repeat is a 200 with its id."""
    images = uploads(digits, 800)
    distinct = [(i, str(i % 10)) for i in range(800)] + [(i, "not_a_digit") for i in range(400)]
    rng = random.Random(0)
    posts = distinct + [rng.choice(distinct) for _ in range(800)]
    rng.shuffle(posts)
    port = free_port()
    server = start_server(port, server_env(bundle, FEEDBACK_DB_URL=url, FEEDBACK_RATE="0",
                                           FEEDBACK_MAX_PENDING="100000"))
    local = __import__("threading").local()

    def post(item):
        index, label = item
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        local.connection.request("POST", f"/feedback?label={label}", body=images[index],
                                 headers={"Content-Type": "image/png"})
        response = local.connection.getresponse()
        return item, response.status, __import__("json").loads(response.read())

    try:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(post, posts))
    finally:
        stop_server(server)
    statuses = Counter(status for _, status, _ in answers)
    assert statuses == {201: 1200, 200: 800}, statuses
    ids = {}
    for item, status, body in answers:
        ids.setdefault(item, set()).add(body["id"])
    assert all(len(found) == 1 for found in ids.values())  # a repeat names the row its original made
    store = Store(url)
    rows = store.rows()
    assert len(rows) == 1200 and len({r["id"] for r in rows}) == 1200
    from hashlib import sha256
    kept = {(r["sha256"], r["label"]): r["id"] for r in rows}
    assert kept == {(sha256(images[i]).hexdigest(), label): ids[(i, label)].pop() for i, label in distinct}
    store.engine.dispose()
