"""Writes nobody reads the result of, sent with the next statement
(``worker/send_later.py``): ``models/bulk``'s INSERTs without RETURNING and its UPDATEs go to
PostgreSQL in one pipeline with whatever the connection sends next, and are never lost,
reordered or sent after a rollback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from dust.models import Product
from dust.models.bulk import insert_rows, update_rows
from dust.worker import db as worker_db
from dust.worker import send_later

pytestmark = pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.services)], indirect=True
)

WHEN = datetime(2026, 12, 1, tzinfo=UTC)


def product(i: int, **fields: Any) -> dict[str, Any]:
    return {
        "product_id": f"prod_{i}",
        "dust_only": False,
        "occurred_at": WHEN,
        "updated_at": WHEN,
    } | fields


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Each time this process waited for PostgreSQL's answer: a statement outside a
    pipeline, or the end of a pipeline (all its statements at once)."""
    seen: list[str] = []
    execute = psycopg.Cursor.execute
    pipeline_exit = psycopg.Pipeline.__exit__

    def counted_execute(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if cursor.connection._pipeline is None:
            seen.append(str(query).split()[0])
        return execute(cursor, query, *args, **kwargs)

    def counted_exit(pipeline: Any, *args: Any) -> Any:
        seen.append("pipeline")
        return pipeline_exit(pipeline, *args)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted_execute)
    monkeypatch.setattr(psycopg.Pipeline, "__exit__", counted_exit)
    yield seen


def product_ids(session: Session) -> list[str]:
    return list(session.scalars(select(Product.product_id).order_by(Product.product_id)))


def test_writes_go_with_the_next_statement_in_one_round_trip(
    session: Session, round_trips: list[str]
) -> None:
    session.connection()
    round_trips.clear()
    insert_rows(session, Product.__table__, [product(1), product(2)])
    update_rows(session, Product.__table__, [product(2, dust_only=True)], key="product_id")
    assert round_trips == []  # nothing sent yet
    rows = session.execute(select(Product.product_id, Product.dust_only).order_by("product_id"))
    assert [tuple(r) for r in rows] == [("prod_1", False), ("prod_2", True)]  # sent in order
    assert round_trips == ["pipeline"]


def test_a_group_of_writes_in_a_savepoint_and_the_commit_take_two_round_trips(
    db: str, round_trips: list[str]
) -> None:
    # What the inbox does for a batch of new orders: SAVEPOINT, the writes, the inbox rows
    # (INSERT ... RETURNING: read at once), RELEASE, COMMIT.
    with worker_db.session_scope() as session:
        session.connection()
        round_trips.clear()
        savepoint = session.begin_nested()
        insert_rows(session, Product.__table__, [product(1)])
        update_rows(session, Product.__table__, [product(1, dust_only=True)], key="product_id")
        claimed = insert_rows(session, Product.__table__, [product(2)], returning="product_id")
        savepoint.commit()
    assert claimed == ["prod_2"]
    assert round_trips == ["pipeline", "pipeline"]
    with worker_db.session_scope() as session:
        rows = session.execute(select(Product.product_id, Product.dust_only).order_by("product_id"))
        assert [tuple(r) for r in rows] == [("prod_1", True), ("prod_2", False)]


def test_nested_savepoints_held_are_rolled_back_to_the_right_one(session: Session) -> None:
    outer = session.begin_nested()
    insert_rows(session, Product.__table__, [product(1)])
    inner = session.begin_nested()
    insert_rows(session, Product.__table__, [product(2)])
    inner.commit()  # RELEASE, held
    insert_rows(session, Product.__table__, [product(3)])
    outer.rollback()  # nothing of it was sent yet: the SAVEPOINT goes, then the rollback
    insert_rows(session, Product.__table__, [product(4)])
    again = session.begin_nested()
    insert_rows(session, Product.__table__, [product(5)])
    inner = session.begin_nested()
    insert_rows(session, Product.__table__, [product(6)])
    inner.rollback()
    again.commit()
    assert product_ids(session) == ["prod_4", "prod_5"]


def test_writes_held_at_commit_are_committed(db: str) -> None:
    with worker_db.session_scope() as session:
        insert_rows(session, Product.__table__, [product(1)])
    with worker_db.session_scope() as session:
        assert product_ids(session) == ["prod_1"]


def test_writes_held_at_a_rollback_to_a_savepoint_are_never_sent(session: Session) -> None:
    insert_rows(session, Product.__table__, [product(1)])
    savepoint = session.begin_nested()  # SAVEPOINT: sends prod_1 first
    insert_rows(session, Product.__table__, [product(2)])
    insert_rows(session, Product.__table__, [product(1)])  # would be refused: never sent
    savepoint.rollback()
    insert_rows(session, Product.__table__, [product(3)])
    assert product_ids(session) == ["prod_1", "prod_3"]


def test_writes_held_at_a_rollback_are_never_sent(db: str) -> None:
    with worker_db.get_engine().connect() as connection:  # one connection throughout
        session = Session(bind=connection)
        insert_rows(session, Product.__table__, [product(1)])
        connection.rollback()
        insert_rows(session, Product.__table__, [product(2)])
        assert product_ids(session) == ["prod_2"]


def test_a_held_write_refused_is_raised_by_the_next_statement_as_sqlalchemy_raises_it(
    db: str,
) -> None:
    with worker_db.session_scope() as session:
        insert_rows(session, Product.__table__, [product(1)])
    with pytest.raises(IntegrityError, match="pk_dust_products"):
        with worker_db.session_scope() as session:
            insert_rows(session, Product.__table__, [product(1)])  # the same key again
            session.execute(text("SELECT 1"))
    with worker_db.session_scope() as session:
        assert product_ids(session) == ["prod_1"]


def test_a_held_write_refused_at_commit_is_raised_as_sqlalchemy_raises_it(db: str) -> None:
    with worker_db.session_scope() as session:
        insert_rows(session, Product.__table__, [product(1)])
    with pytest.raises(IntegrityError, match="pk_dust_products"):
        with worker_db.session_scope() as session:
            insert_rows(session, Product.__table__, [product(2), product(1)])
    with worker_db.session_scope() as session:
        assert product_ids(session) == ["prod_1"]


def test_the_unit_of_works_statements_go_after_the_held_writes(session: Session) -> None:
    # An ORM flush sends its INSERTs with executemany: the held write goes first, in
    # the same pipeline, so a row may refer to one inserted set-based just before.
    insert_rows(session, Product.__table__, [product(1)])
    session.add_all([Product(**product(2)), Product(**product(3))])
    session.flush()
    assert product_ids(session) == ["prod_1", "prod_2", "prod_3"]


def test_the_unit_of_works_row_counts_still_hold_behind_held_writes(session: Session) -> None:
    # An UPDATE of the unit of work that rides a pipeline still reports the rows it
    # changed: a row gone from under it is an error, never a change silently lost.
    session.add_all([Product(**product(1)), Product(**product(2))])
    session.flush()
    first, second = session.scalars(select(Product).order_by(Product.product_id)).all()
    session.execute(text("DELETE FROM dust_products WHERE product_id = 'prod_2'"))
    first.dust_only = second.dust_only = True
    insert_rows(session, Product.__table__, [product(3)], flush=False)  # held
    with pytest.raises(StaleDataError):
        session.flush()


def test_a_connection_back_in_the_pool_holds_nothing(db: str) -> None:
    engine = worker_db.get_engine()
    with engine.connect() as connection:
        session = Session(bind=connection)
        insert_rows(session, Product.__table__, [product(1)])
        dbapi_connection = connection.connection.dbapi_connection
        assert send_later.held(dbapi_connection)
    # closed without commit or rollback: the pool's reset drops the write
    assert not send_later.held(dbapi_connection)
    with worker_db.session_scope() as session:
        assert product_ids(session) == []
