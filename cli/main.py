"""``dust``: the command line (docs/CONTRACT.md §6). Every reporting command takes ``--json``.

Errors print one line to stderr and exit non-zero; a traceback is a bug.
"""

from __future__ import annotations

import sys

import typer
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import OperationalError as DatabaseError

from dust.cli import (
    accounts,
    backfill,
    db,
    dead_letters,
    demo,
    events,
    export,
    health,
    jobs,
    products,
    rules,
)
from dust.cli.common import safe_url
from dust.worker.errors import safe_message
from dust.worker.settings import ConfigError, get_settings

app = typer.Typer(
    help="Dust: loyalty points and store-credit ledger.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# One module per command group; each brings its own commands.
app.add_typer(accounts.app)
app.add_typer(events.app)
app.add_typer(products.app, name="products")
app.add_typer(backfill.app)
app.add_typer(export.app)
app.add_typer(jobs.app)
app.add_typer(rules.rules_app, name="rules")
app.add_typer(dead_letters.dead_letters_app, name="dead-letters")
app.add_typer(health.app)
app.add_typer(db.app, name="db")
app.add_typer(demo.commands)


def main() -> None:
    try:
        get_settings()
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        sys.exit(2)
    try:
        app()
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        sys.exit(2)
    except Exception as exc:
        unreachable = _unreachable(exc)
        if unreachable is None:
            raise
        typer.echo(f"dust: {unreachable}", err=True)
        sys.exit(1)


def _no_schema(exc: BaseException) -> bool:
    """A missing table or column: the schema was never created, or is behind the code."""

    if not isinstance(exc, DBAPIError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in ("42P01", "42703"):  # PostgreSQL: undefined table, undefined column
        return True
    text = str(exc.orig)
    return text.startswith("no such table") or text.startswith("no such column")


def _unreachable(exc: BaseException) -> str | None:
    """One line for a database or broker that cannot be reached, its URL shown without
    the password (a traceback would be noise, and may quote a connection string)."""

    settings = get_settings()
    problem = f"{type(exc).__name__}: {safe_message(exc)}"
    if _no_schema(exc):
        return (
            f"the database {safe_url(settings.database)} has no Dust schema (or an older"
            " one): run `dust db upgrade`"
        )
    if isinstance(exc, DatabaseError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return f"cannot reach the database {safe_url(settings.database)} ({problem})"
    broker_down = isinstance(exc, BrokerError | RedisConnectionError | ConnectionError) or (
        isinstance(exc, RuntimeError) and "reconnect to the Celery result store" in str(exc)
    )
    if broker_down:
        return f"cannot reach the broker {safe_url(settings.broker)} ({problem})"
    return None


if __name__ == "__main__":
    main()
