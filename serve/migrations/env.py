"""Alembic's environment for the feedback store (serve/store.py runs `upgrade head` on first use).

Several gunicorn workers may reach a new store at once: the migration runs under a lock, so one creates
the schema and the others then find it at head. SQLite: the store's connections begin IMMEDIATE (one
writer at a time, the others wait up to the busy timeout); PostgreSQL: a transaction-scoped advisory
lock. Both keep DDL inside the transaction, so a failed migration leaves nothing half made.
"""
from alembic import context
from sqlalchemy import create_engine, text

LOCK = 0x64696769  # "digi": the advisory lock's key on PostgreSQL

connection = context.config.attributes.get("connection")


def run(conn):
    context.configure(connection=conn, target_metadata=None, transactional_ddl=True)
    with context.begin_transaction():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK})
        context.run_migrations()


if connection is not None:
    run(connection)
else:  # `alembic -x ...` by hand: the URL from the config
    with create_engine(context.config.get_main_option("sqlalchemy.url")).connect() as conn:
        run(conn)
