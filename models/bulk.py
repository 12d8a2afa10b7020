"""Many rows in one INSERT, for the set-based paths (``tasks.inbox``'s bulk runs,
``ledger.orders.place_new``, ``ledger.journal.credit_many``).

On PostgreSQL the rows go as one array per column, ``INSERT … SELECT … FROM unnest(…)``:
a statement whose text is the same whatever the number of rows, so psycopg converts it
once and PostgreSQL plans it once. (SQLAlchemy's multi-row ``VALUES`` is a statement of
hundreds of parameters, new for each row count, which psycopg parses again every time:
measured at 2.4 ms per 50-row statement, more than the insert itself.) On SQLite, an
``executemany``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import Table, TextClause, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session


def insert_rows(
    session: Session,
    table: Table,
    rows: list[dict[str, Any]],
    *,
    skip_conflicts: bool = False,
    returning: str | None = None,
) -> list[Any]:
    """Insert ``rows`` (dicts with the same keys) into ``table``; with ``skip_conflicts``,
    a row that conflicts with one already there is left out (``ON CONFLICT DO NOTHING``).

    Returns the ``returning`` column of the rows inserted (empty without ``returning``).
    When that column is the table's integer primary key and no row was left out, the
    values come in the order of ``rows``.
    """
    if not rows:
        return []
    session.flush()  # what the session holds goes first, as before any statement
    dialect = session.get_bind().dialect
    columns = tuple(rows[0])
    if dialect.name != "postgresql":
        stmt = sqlite.insert(table)
        if skip_conflicts:
            stmt = stmt.on_conflict_do_nothing()
        if returning is None:
            session.execute(stmt, rows)
            return []
        ordered = not skip_conflicts
        return list(
            session.scalars(
                stmt.returning(table.c[returning], sort_by_parameter_order=ordered), rows
            )
        )
    statement = _unnest_insert(dialect, table, columns, skip_conflicts, returning)
    arrays = {}
    for name in columns:
        process = table.c[name].type.bind_processor(dialect)
        values = [row[name] for row in rows]
        arrays[f"c_{name}"] = [process(v) for v in values] if process else values
    if returning is None:
        session.execute(statement, arrays)
        return []
    values = list(session.scalars(statement, arrays))
    if _is_integer_key(table, returning):
        # Rows are inserted in array order (ORDER BY the ordinality) and a sequence only
        # grows, so the keys sorted are the keys of the rows in order.
        values.sort()
    return values


def _is_integer_key(table: Table, name: str) -> bool:
    column = table.c[name]
    return column.primary_key and column.type.python_type is int


@lru_cache(maxsize=64)
def _unnest_insert(
    dialect: Dialect,
    table: Table,
    columns: tuple[str, ...],
    skip_conflicts: bool,
    returning: str | None,
) -> TextClause:
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(name) for name in columns)
    arrays = ", ".join(
        f"CAST(:c_{name} AS {table.c[name].type.compile(dialect=dialect)}[])" for name in columns
    )
    sql = (
        f"INSERT INTO {quote(table.name)} ({names}) SELECT {names}"
        f" FROM unnest({arrays}) WITH ORDINALITY AS rows ({names}, row_number)"
        " ORDER BY row_number"
    )
    if skip_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    if returning is not None:
        sql += f" RETURNING {quote(returning)}"
    return text(sql)
