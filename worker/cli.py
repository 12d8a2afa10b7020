"""``dust``: the command line (docs/CONTRACT.md §6). Every reporting command takes ``--json``.

Errors print one line to stderr and exit non-zero; a traceback is a bug.
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dust.worker import display
from dust.worker.settings import ConfigError, get_settings

app = typer.Typer(
    help="Dust: loyalty points and store-credit ledger.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
events_app = typer.Typer(help="Inspect recorded events.", invoke_without_command=True)
app.add_typer(db_app, name="db")
app.add_typer(events_app, name="events")

console = display.console()
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
#: What ``dust events --status`` takes: the statuses an event is recorded with
#: (``dust_events.status``) and ``conflict``, the refused duplicates of an id.
EVENT_STATUSES = (
    "processed",
    "ignored",
    "rejected",
    "needs_attention",
    "failed",
    "resolved",
    "conflict",
)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear line and return the exit to raise."""
    typer.echo(f"dust: {message}", err=True)
    return typer.Exit(code)


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def actor_option(actor: str | None) -> str:
    return actor or getpass.getuser()


# -- schema ----------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Create or migrate the schema (Alembic)."""
    from dust.models.schema import UnknownRevision, upgrade

    url = get_settings().database
    try:
        upgrade(url, revision)
    except UnknownRevision:
        raise fail(f"no migration {revision!r}: see `dust db history`") from None
    typer.echo(f"schema at {revision} on {_safe_url(url)}")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse (a broker's): scrub it by hand
        from dust.tasks.inbox import scrub

        return scrub(url)


# -- publishing ------------------------------------------------------------------------


@app.command()
def publish(
    name: Annotated[str | None, typer.Argument(help="Event name, e.g. order.placed.")] = None,
    data: Annotated[str | None, typer.Option(help="The payload, as JSON.")] = None,
    event_id: Annotated[
        str | None, typer.Option("--id", help="Event id (default: derived).")
    ] = None,
    occurred_at: Annotated[str | None, typer.Option(help="ISO 8601 instant.")] = None,
    file: Annotated[Path | None, typer.Option(help="A JSONL file of envelopes.")] = None,
) -> None:
    """Publish one event (NAME --data JSON) or every envelope of a JSONL file."""
    from dust.worker.publisher import publish_envelopes

    if (name is None) == (file is None):
        raise fail("give either NAME --data JSON or --file FILE")
    envelopes: list[Any]
    if file is not None:
        envelopes = []
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise fail(f"cannot read {file}: {exc.strerror}") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                envelopes.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise fail(
                    f"{file}:{number}: invalid JSON ({exc.msg}); nothing published"
                ) from None
    else:
        try:
            payload = json.loads(data or "{}")
        except json.JSONDecodeError as exc:
            raise fail(f"--data is not valid JSON ({exc.msg})") from None
        if not isinstance(payload, dict):
            raise fail(f"--data must be a JSON object ({{...}}), not {type(payload).__name__}")
        envelope: dict[str, Any] = {"name": name, "data": payload}
        if event_id:
            envelope["id"] = event_id
        if occurred_at:
            envelope["occurred_at"] = occurred_at
        envelopes = [envelope]
    count = publish_envelopes(envelopes)
    typer.echo(f"published {count} event(s) to dust.events")


# -- reports ---------------------------------------------------------------------------


@app.command()
def balance(customer_id: str, as_json: JsonOption = False) -> None:
    """A customer's dust and store-credit balances."""
    from dust.ledger import reports
    from dust.worker.db import session_scope

    redeem_values = get_settings().redeem_table()
    with session_scope(read_only=True) as session:
        result = reports.balance(session, customer_id, redeem_values)
    if as_json:
        print_json(result)
        return
    table = display.table(
        "account", "code", "balance", "held", "pending", "available", title=customer_id
    )
    dust = result["dust"]
    table.add_row(
        "dust",
        "",
        str(dust["balance"]),
        str(dust["held"]),
        str(dust["pending"]),
        str(dust["available"]),
    )
    for sc in result["store_credit"]:
        currency = sc["currency_code"]
        table.add_row(
            f"store credit {currency}",
            sc["code"],
            display.money(sc["balance"], currency),
            display.money(sc["held"], currency),
            "",
            display.money(sc["available"], currency),
        )
    console.print(table)


@app.command()
def history(
    customer_id: str,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
    as_json: JsonOption = False,
) -> None:
    """A customer's entries, newest first."""
    from dust.ledger import reports
    from dust.worker.db import session_scope

    with session_scope() as session:
        rows = reports.history(session, customer_id, limit)
    if as_json:
        print_json(rows)
        return
    table = display.table(
        "when", "account", "amount", "balance", "reason", "reference", title=customer_id
    )
    for row in rows:
        sign = "+" if row["direction"] == "credit" else "-"
        account = row["kind"] + (f" {row['currency_code']}" if row["currency_code"] else "")
        table.add_row(
            row["created_at"][:19],
            account,
            sign + display.amount(row["amount"], row["kind"], row["currency_code"]),
            display.amount(row["balance_after"], row["kind"], row["currency_code"]),
            row["reason"],
            f"{row['reference_type']}:{row['reference_id']}",
        )
    console.print(table)


@events_app.callback()
def events(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="Only events with this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100000)] = 50,
    as_json: JsonOption = False,
) -> None:
    """List recorded events, newest first (or use a subcommand)."""
    if ctx.invoked_subcommand is not None:
        return
    if status is not None and status not in EVENT_STATUSES:
        raise fail(f"--status must be one of {', '.join(EVENT_STATUSES)}; got {status!r}")
    from dust.ledger import reports
    from dust.worker.db import session_scope

    if status == "conflict":
        _list_conflicts(limit, as_json)
        return
    with session_scope() as session:
        rows = reports.events(session, [status] if status else None, limit)
    if as_json:
        print_json(rows)
        return
    table = display.table("received", "id", "name", "status", "reason")
    for row in rows:
        table.add_row(
            str(row["received_at"])[:19],
            row["event_id"],
            row["name"],
            row["status"],
            row["reason"] or "",
        )
    console.print(table)


def _list_conflicts(limit: int, as_json: bool) -> None:
    """Envelopes refused as ``conflict`` (an id already used by other content), newest
    first: the id, its name, the digest of the content applied and of the one refused."""
    from sqlalchemy import select

    from dust.models import Event, EventConflict
    from dust.worker.db import session_scope

    stmt = (
        select(EventConflict, Event)
        .join(Event, Event.event_id == EventConflict.event_id)
        .order_by(EventConflict.received_at.desc(), EventConflict.id.desc())
        .limit(limit)
    )
    with session_scope() as session:
        rows = [_conflict_json(conflict, event) for conflict, event in session.execute(stmt)]
    if as_json:
        print_json(rows)
        return
    table = display.table("received", "id", "name", "first content", "conflicting content")
    for row in rows:
        table.add_row(
            row["received_at"][:19],
            row["event_id"],
            row["name"],
            row["first_content_hash"][:16],
            row["conflicting_content_hash"][:16],
        )
    console.print(table)


def _conflict_json(conflict: Any, event: Any) -> dict[str, Any]:
    return {
        "event_id": conflict.event_id,
        "name": event.name,
        "status": "conflict",
        "first_content_hash": event.content_hash,
        "conflicting_content_hash": conflict.content_hash,
        "received_at": conflict.received_at.isoformat(),
    }


@events_app.command("show")
def events_show(event_id: str, as_json: JsonOption = False) -> None:
    """One recorded event in full, with the conflicting envelopes its id was sent with."""
    from sqlalchemy import select

    from dust.ledger import reports
    from dust.models import Event, EventConflict, EventResolution
    from dust.worker.db import session_scope

    with session_scope() as session:
        row = session.get(Event, event_id)
        if row is None:
            raise fail(f"no event with id {event_id}")
        result = reports.event_json(row, full=True)
        result["content_hash"] = row.content_hash
        conflicts = session.scalars(
            select(EventConflict)
            .where(EventConflict.event_id == event_id)
            .order_by(EventConflict.received_at, EventConflict.id)
        )
        result["conflicts"] = [
            {**_conflict_json(c, row), "envelope": reports.stored_envelope(c.envelope)}
            for c in conflicts
        ]
        if row.status == "resolved":
            found = session.scalar(
                select(EventResolution).where(EventResolution.event_id == event_id)
            )
            if found is not None:
                result["resolution"] = {
                    "previous_status": found.previous_status,
                    "reason": found.reason,
                    "actor": found.actor,
                    "entry_id": found.entry_id,
                    "resolved_at": found.resolved_at.isoformat(),
                }
    print_json(result) if as_json else console.print_json(json.dumps(result, default=str))


# -- demo ------------------------------------------------------------------------------


@app.command()
def demo(
    customers: Annotated[int, typer.Option(min=1, max=10000, help="Simulated customers.")] = 12,
    orders: Annotated[int, typer.Option(min=1, max=100000, help="Simulated orders.")] = 40,
    seed: Annotated[int, typer.Option(help="Random seed of the simulation.")] = 7,
    as_json: JsonOption = False,
) -> None:
    """Run the whole system here: a real worker, a simulated stream of commerce events,
    then balances and what happened."""
    from dust.worker.demo import run_demo

    ok = run_demo(customers=customers, orders=orders, seed=seed, as_json=as_json)
    if not ok:
        raise typer.Exit(1)


# Commands of the jobs and admin modules register themselves on ``app`` when imported.
from dust.worker import (  # noqa: E402,F401
    cli_admin,
    cli_db,
    cli_dead_letters,
    cli_events,
    cli_health,
    cli_jobs,
    cli_rules,
)


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
    from sqlalchemy.exc import DBAPIError

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
    from kombu.exceptions import OperationalError as BrokerError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.exc import OperationalError as DatabaseError

    from dust.tasks.inbox import safe_message

    settings = get_settings()
    problem = f"{type(exc).__name__}: {safe_message(exc)}"
    if _no_schema(exc):
        return (
            f"the database {_safe_url(settings.database)} has no Dust schema (or an older"
            " one): run `dust db upgrade`"
        )
    if isinstance(exc, DatabaseError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return f"cannot reach the database {_safe_url(settings.database)} ({problem})"
    broker_down = isinstance(exc, BrokerError | RedisConnectionError | ConnectionError) or (
        isinstance(exc, RuntimeError) and "reconnect to the Celery result store" in str(exc)
    )
    if broker_down:
        return f"cannot reach the broker {_safe_url(settings.broker)} ({problem})"
    return None


if __name__ == "__main__":
    main()
