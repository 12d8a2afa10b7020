"""Many rows in one INSERT, for the set-based paths (``dust.inbox``'s bulk runs,
``dust.ledger.orders.place_new``, ``dust.ledger.journal.credit_many``).

On PostgreSQL the rows go as one JSON document, ``INSERT … SELECT … FROM
json_to_recordset(…)``: a statement whose text is the same whatever the number of rows, so
psycopg converts it once and PostgreSQL plans it once, and whose one parameter is written
by the C JSON encoder. (SQLAlchemy's multi-row ``VALUES`` is a statement of hundreds of
parameters, new for each row count, which psycopg parses again every time, at a cost
above the insert itself. One array per column, ``unnest``, came next: psycopg escapes
every element of a text array with a regular expression, a large share of a worker
process's time with the inbox's envelopes. Figures: BENCHMARKS.md, "Bulk writes as one
JSON document".) On SQLite, an ``executemany``.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Table, TextClause, bindparam, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from dust.worker.send_later import SEND_LATER


def insert_rows(
    session: Session,
    table: Table,
    rows: list[dict[str, Any]],
    *,
    skip_conflicts: bool = False,
    returning: str | None = None,
    flush: bool = True,
) -> list[Any]:
    """Insert ``rows`` (dicts with the same keys) into ``table``; with ``skip_conflicts``,
    a row that conflicts with one already there is left out (``ON CONFLICT DO NOTHING``).

    Returns the ``returning`` column of the rows inserted (empty without ``returning``).
    When that column is the table's integer primary key and no row was left out, the
    values come in the order of ``rows``. ``flush=False``: the session's unit of work is
    not flushed first (a caller writing rows the session's rows refer to).
    """
    if not rows:
        return []
    if flush:  # what the session holds goes first, as before any statement
        session.flush()
    # On the session's connection: no second flush (an ORM statement's autoflush).
    connection = session.connection()
    dialect = connection.dialect
    columns = tuple(rows[0])
    if dialect.name != "postgresql":
        stmt = sqlite.insert(table)
        if skip_conflicts:
            stmt = stmt.on_conflict_do_nothing()
        if returning is None:
            connection.execute(stmt, rows)
            return []
        ordered = not skip_conflicts
        return list(
            connection.execute(
                stmt.returning(table.c[returning], sort_by_parameter_order=ordered), rows
            ).scalars()
        )
    statement = _json_insert(dialect, table, columns, skip_conflicts, returning)
    document = _document(dialect, table, columns, rows)
    if returning is None:
        connection.execute(statement, {"rows": document})
        return []
    values = list(connection.execute(statement, {"rows": document}).scalars())
    if _is_integer_key(table, returning):
        # Rows are inserted in document order (ORDER BY the ordinality) and a sequence
        # only grows, so the keys sorted are the keys of the rows in order.
        values.sort()
    return values


def update_rows(
    session: Session, table: Table, rows: list[dict[str, Any]], *, key: str = "id"
) -> None:
    """Set columns of many rows, found by their primary key ``key``, in one UPDATE (rows:
    dicts with the same keys, ``key`` among them)."""
    if not rows:
        return
    session.flush()
    dialect = session.get_bind().dialect
    columns = tuple(name for name in rows[0] if name != key)
    if dialect.name != "postgresql":
        stmt = (
            update(table)
            .where(table.c[key] == bindparam(f"key_{key}"))
            .values({name: bindparam(f"key_{name}") for name in columns})
        )
        session.execute(stmt, [{f"key_{k}": v for k, v in row.items()} for row in rows])
        return
    statement = _json_update(dialect, table, columns, key)
    session.execute(statement, {"rows": _document(dialect, table, (key, *columns), rows)})


def _document(
    dialect: Dialect, table: Table, columns: tuple[str, ...], rows: list[dict[str, Any]]
) -> str:
    """The rows as one JSON array of objects, each value as its column binds it."""
    processors = [(name, table.c[name].type.bind_processor(dialect)) for name in columns]
    return json.dumps(
        [
            {name: process(row[name]) if process else row[name] for name, process in processors}
            for row in rows
        ],
        default=_json_value,
        separators=(",", ":"),
    )


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime in a bulk insert")
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} cannot go in a bulk insert")


def _is_integer_key(table: Table, name: str) -> bool:
    column = table.c[name]
    return column.primary_key and column.type.python_type is int


@lru_cache(maxsize=64)
def _json_insert(
    dialect: Dialect,
    table: Table,
    columns: tuple[str, ...],
    skip_conflicts: bool,
    returning: str | None,
) -> TextClause:
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(name) for name in columns)
    types = ", ".join(
        f"{quote(name)} {table.c[name].type.compile(dialect=dialect)}" for name in columns
    )
    sql = (
        f"INSERT INTO {quote(table.name)} ({names}) SELECT {names}"
        f" FROM ROWS FROM (json_to_recordset(CAST(:rows AS json)) AS ({types}))"
        f" WITH ORDINALITY AS rows ({names}, row_number) ORDER BY row_number"
    )
    if skip_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    if returning is not None:
        return text(sql + f" RETURNING {quote(returning)}")
    return text(sql).execution_options(**{SEND_LATER: True})  # nothing reads its result


@lru_cache(maxsize=64)
def _json_update(
    dialect: Dialect, table: Table, columns: tuple[str, ...], key: str = "id"
) -> TextClause:
    quote = dialect.identifier_preparer.quote
    name = quote(table.name)
    types = ", ".join(
        f"{quote(c)} {table.c[c].type.compile(dialect=dialect)}" for c in (key, *columns)
    )
    sets = ", ".join(f"{quote(c)} = rows.{quote(c)}" for c in columns)
    k = quote(key)
    # The keys again, as an array: PostgreSQL takes json_to_recordset for 100 rows and,
    # joining those to the table, reads a table of up to a few tens of thousands of rows
    # whole (a hash join) rather than look up 100 keys in its index; given "key = ANY"
    # an array, it looks the rows up by the primary key whatever the table's size.
    return text(  # sent with the next statement: nothing reads its result
        f"WITH rows AS MATERIALIZED (SELECT * FROM json_to_recordset(CAST(:rows AS json))"
        f" AS document ({types})) UPDATE {name} SET {sets} FROM rows"
        f" WHERE {name}.{k} = rows.{k} AND {name}.{k} = ANY(ARRAY(SELECT rows.{k} FROM rows))"
    ).execution_options(**{SEND_LATER: True})
