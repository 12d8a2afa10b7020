"""Database engine and the one session scope.

``session_scope()`` is the only way Dust opens a transaction: commit on success, roll back
on any exception. On SQLite every transaction starts with ``BEGIN IMMEDIATE`` so writers
queue on the database lock instead of failing half-way (SQLite has no row locks; the
PostgreSQL code paths lock rows with ``SELECT … FOR UPDATE`` instead).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from dust.worker import send_later
from dust.worker.settings import get_settings

_engines: dict[tuple[int, str], Engine] = {}


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own BEGIN is
        # deferred, which turns concurrent writers into "database is locked" errors).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Readers take no write lock (WAL lets them read beside the writer).
        read_only = connection.get_execution_options().get("dust_read_only", False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """A new engine for ``url`` with Dust's connection settings."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30})
        _configure_sqlite(engine)
        return engine
    engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    _configure_postgresql(engine)
    return engine


def _configure_postgresql(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Plan every statement with its own parameters and the tables' current size.
        # psycopg prepares a statement run 5 times; PostgreSQL then settles on one
        # generic plan, made while Dust's tables were small (a sequential scan), and keeps
        # it as they grow until an ANALYZE, so every event got slower as the ledger grew.
        # Custom plans cost a little planning each time and keep using the indexes
        # (figures: BENCHMARKS.md, "Plans").
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET plan_cache_mode = force_custom_plan")
        dbapi_connection.commit()

    send_later.install(engine)  # writes sent with the next statement


def get_engine(url: str | None = None) -> Engine:
    """The engine of this process for ``url`` (default: the configured database).

    Keyed by process id so a forked worker child never reuses its parent's sockets.
    """
    url = url or get_settings().database
    key = (os.getpid(), url)
    engine = _engines.get(key)
    if engine is None:
        engine = _engines[key] = make_engine(url)
    return engine


def dispose_engines() -> None:
    """Forget engines inherited from a parent process (called after fork)."""
    for engine in _engines.values():
        engine.dispose(close=False)
    _engines.clear()


@contextmanager
def session_scope(engine: Engine | None = None, *, read_only: bool = False) -> Iterator[Session]:
    """One transaction: commit when the block returns, roll back when it raises.

    ``read_only`` is a promise that the block only reads; on SQLite it then does not queue
    behind writers.
    """
    bind = engine or get_engine()
    if read_only:
        bind = bind.execution_options(dust_read_only=True)
    factory = sessionmaker(bind=bind, expire_on_commit=False)
    with factory() as session, session.begin():
        yield session
