"""``dust export``: every entry as CSV, read from the database directly."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from sqlalchemy import select

from dust.cli import common
from dust.cli.common import fail
from dust.models import (
    Account,
    Entry,
)
from dust.worker.db import session_scope

app = typer.Typer()

# -- export ----------------------------------------------------------------------------

EXPORT_COLUMNS = [
    "id",
    "created_at",
    "customer_id",
    "kind",
    "currency_code",
    "direction",
    "amount",
    "balance_after",
    "reason",
    "reference_type",
    "reference_id",
    "event_id",
    "actor",
    "memo",
]


@app.command()
def export(
    customer: Annotated[str | None, typer.Option("--customer", help="Only this customer.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Entries created at or after (ISO 8601).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Entries created before (ISO 8601).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Entries as CSV, oldest first, streamed from the database (constant memory)."""

    since_at, until_at = common.instant(since, "--since"), common.instant(until, "--until")
    if since_at and until_at and since_at >= until_at:
        raise fail("--since must be before --until")
    customer_id = common.customer(customer) if customer is not None else None
    stmt = (
        select(
            Entry.id,
            Entry.created_at,
            Account.customer_id,
            Account.kind,
            Account.currency_code,
            Entry.direction,
            Entry.amount,
            Entry.balance_after,
            Entry.reason,
            Entry.reference_type,
            Entry.reference_id,
            Entry.event_id,
            Entry.actor,
            Entry.memo,
        )
        .join(Account, Account.id == Entry.account_id)
        .order_by(Entry.id)
    )
    if customer_id is not None:
        stmt = stmt.where(Account.customer_id == customer_id)
    if since_at is not None:
        stmt = stmt.where(Entry.created_at >= since_at)
    if until_at is not None:
        stmt = stmt.where(Entry.created_at < until_at)
    partial = output.with_name(output.name + ".partial") if output is not None else None
    with session_scope(read_only=True) as session:
        known = select(Account.id).where(Account.customer_id == customer_id).limit(1)
        if customer_id is not None and session.scalar(known) is None:
            raise fail(f"unknown customer {customer_id} (no accounts)")
        try:
            handle: IO[str] = (
                partial.open("w", newline="", encoding="utf-8") if partial else sys.stdout
            )
        except OSError as exc:
            raise fail(f"cannot write {output}: {exc.strerror}") from None
        try:
            # Core rows through a server-side cursor (psycopg) / a lazy cursor (SQLite):
            # memory stays constant, and no ORM identity map fills up.
            stream = stmt.execution_options(stream_results=True, max_row_buffer=2000)
            count = _write_csv(handle, session.connection().execute(stream))
        except BrokenPipeError:  # e.g. `dust export | head`: the reader has what it wanted
            _quiet_stdout()
            raise typer.Exit(0) from None
        except BaseException:
            if partial is not None:
                handle.close()
                partial.unlink(missing_ok=True)
            raise
        if partial is not None:
            handle.close()
    if output is not None and partial is not None:
        partial.replace(output)
        typer.echo(f"exported {count} entries to {output}", err=True)


def _quiet_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the exit flush does not fail."""

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _write_csv(handle: IO[str], rows: Any) -> int:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    for row in rows:
        values = list(row)
        values[1] = values[1].isoformat()
        writer.writerow(["" if value is None else value for value in values])
        count += 1
    handle.flush()
    return count
