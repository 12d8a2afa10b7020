"""Statements nobody reads the result of, sent with the next one: fewer round trips.

A transaction of the worker sends its reads one at a time (each answer decides what comes
next), but most of its other statements are writes whose answer nobody reads: the
set-based INSERTs and UPDATEs of ``models/bulk.py`` (marked with the execution option
``SEND_LATER``), and the SAVEPOINT and RELEASE SAVEPOINT around each group of events. On
PostgreSQL those are *held* when executed, and sent with the connection's next statement
that is not (a read, an INSERT … RETURNING, the unit of work's flush) or with its COMMIT,
all of them in one psycopg pipeline: one round trip where each cost one before. A batch of
50 new orders waited on 16 round trips and now on 13; a batch of 50 of a store's mixed
stream on 48, now on 33 (``bench/profile_event.py``; BENCHMARKS.md, "Writes sent with the
next statement"). What that buys grows with the distance to the database.

What stays as it was:

- **Order.** Held statements go in the order executed, before the statement that sends
  them, in one pipeline; PostgreSQL runs a pipeline's statements in order, in the
  transaction, as if sent one by one.
- **Errors.** The first error among them (a constraint, a deadlock) ends the pipeline and
  is raised by the statement that sent it, as SQLAlchemy raises any statement's error
  (``IntegrityError``, ``OperationalError``: what ``worker/errors.py`` retries or
  reports); the transaction is then failed and rolled back, as before. Raised by the
  COMMIT, it is wrapped the same way.
- **Rollbacks.** A ROLLBACK TO SAVEPOINT drops, unsent, what was held after that savepoint
  (the SAVEPOINT itself, if held, goes with the rollback); a ROLLBACK, or a connection
  going back to the pool, drops everything held. Nothing held is ever sent into another
  transaction.

SQLite has no pipeline: there every statement goes when executed (not installed).
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, event, exc

#: Execution option of a statement whose result nobody reads: held (see above).
SEND_LATER = "dust_send_later"

#: What is held on each psycopg connection, in the order executed: (SQL, parameters).
_held: WeakKeyDictionary[Any, list[tuple[str, Any]]] = WeakKeyDictionary()

#: Statements SQLAlchemy sends for ``begin_nested()`` and its commit: held as well.
_SAVEPOINTS = ("SAVEPOINT ", "RELEASE SAVEPOINT ")


def held(dbapi_connection: Any) -> list[tuple[str, Any]]:
    """What ``dbapi_connection`` holds now (for tests and benchmarks)."""
    return list(_held.get(dbapi_connection, []))


def install(engine: Engine) -> None:
    """Hold the statements marked ``SEND_LATER`` and the savepoints on ``engine``'s
    connections (PostgreSQL with psycopg)."""
    event.listen(engine, "do_execute", _do_execute)
    event.listen(engine, "do_execute_no_params", _do_execute_no_params)
    event.listen(engine, "do_executemany", _do_executemany)
    event.listen(engine, "commit", _commit)
    event.listen(engine, "rollback", _rollback)
    event.listen(engine, "rollback_savepoint", _rollback_savepoint)
    event.listen(engine, "reset", _reset)


def _send_with(cursor: Any, run: Any) -> None:
    """What ``cursor``'s connection holds, then ``run(cursor)``, in one pipeline; psycopg
    raises the first error when the pipeline ends, after which ``cursor`` has its result."""
    connection = cursor.connection
    statements = _held.pop(connection, [])
    with connection.pipeline():
        for statement, parameters in statements:
            connection.execute(statement, parameters)
        run(cursor)


def _do_execute(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
    if context.execution_options.get(SEND_LATER) or statement.startswith(_SAVEPOINTS):
        _held.setdefault(cursor.connection, []).append((statement, parameters))
        return True
    if not _held.get(cursor.connection):
        return False  # SQLAlchemy executes it as usual
    _send_with(cursor, lambda c: c.execute(statement, parameters))
    return True


def _do_execute_no_params(cursor: Any, statement: str, _context: Any) -> bool:
    if statement.startswith(_SAVEPOINTS):
        _held.setdefault(cursor.connection, []).append((statement, None))
        return True
    if not _held.get(cursor.connection):
        return False
    _send_with(cursor, lambda c: c.execute(statement))
    return True


def _do_executemany(cursor: Any, statement: str, parameters: Any, _context: Any) -> bool:
    if not _held.get(cursor.connection):
        return False
    _send_with(cursor, lambda c: c.executemany(statement, parameters))
    return True


def _commit(connection: Any) -> None:
    """Before SQLAlchemy's COMMIT: what is held, and the COMMIT itself, in one pipeline
    (psycopg's ``commit()`` then has no transaction left to end: it sends nothing)."""
    dbapi_connection = _dbapi_connection(connection)
    if dbapi_connection is None or not _held.get(dbapi_connection):
        return  # nothing held (or no connection: SQLAlchemy's own commit says so)
    try:
        with dbapi_connection.cursor() as cursor:
            _send_with(cursor, lambda _c: dbapi_connection.commit())
    except dbapi_connection.Error as error:  # as SQLAlchemy raises a statement's error
        raise exc.DBAPIError.instance(None, None, error, type(dbapi_connection).Error) from error


def _dbapi_connection(connection: Any) -> Any:
    try:
        return connection.connection.dbapi_connection
    except exc.SQLAlchemyError:  # invalidated: what it held went with it
        return None


def _rollback(connection: Any) -> None:
    dbapi_connection = _dbapi_connection(connection)
    if dbapi_connection is not None:
        _held.pop(dbapi_connection, None)


def _rollback_savepoint(connection: Any, name: str, _context: Any) -> None:
    dbapi_connection = _dbapi_connection(connection)
    statements = _held.get(dbapi_connection) if dbapi_connection is not None else None
    if not statements:
        return
    # Held after the savepoint was sent: all of it goes. Held with it: what follows it.
    kept = next(
        (
            at + 1
            for at, (sql, _) in enumerate(statements)
            if sql.startswith("SAVEPOINT ") and sql.split()[-1].strip('"') == name
        ),
        0,
    )
    del statements[kept:]


def _reset(dbapi_connection: Any, *_args: Any) -> None:
    """The pool's reset of a connection given back (after its rollback, if any)."""
    _held.pop(dbapi_connection, None)
