"""``dust expire``, ``dust reconcile`` and ``dust jobs``: the scheduled jobs, run by hand.

They run the same code as the beat tasks (``tasks/runs.py``) in this process, each as a
recorded run of its own (period ``cli:<start instant>``), so they never take a scheduled
period from the scheduler.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from dust.worker import display
from dust.worker.cli import JsonOption, actor_option, app, console, fail, print_json


def _as_of(value: str | None) -> datetime:
    from dust.models.base import utcnow

    if value is None:
        return utcnow()
    text = value.strip()
    try:
        instant = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise fail(f"--as-of must be an ISO 8601 instant, got {value!r}") from None
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


def _database_error(exc: Exception) -> typer.Exit:
    first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return fail(f"{type(exc).__name__}: {first[0] if first else ''}", 2)


@app.command()
def expire(
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Expire what is due by this ISO 8601 instant (default: now; no offset = UTC).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Expire the holds and then the lots due by --as-of (what the scheduler runs).
    Running it twice for the same instant changes nothing."""
    from sqlalchemy.exc import SQLAlchemyError

    from dust.tasks import runs

    instant = _as_of(as_of)
    result: dict[str, Any] = {"as_of": instant.isoformat()}
    try:
        # Holds first: dust a hold no longer reserves can then expire with its lots.
        for job in ("expire_holds", "expire_lots"):
            result[job.removeprefix("expire_")] = runs.run_now(job, instant)
    except SQLAlchemyError as exc:
        raise _database_error(exc) from None
    if as_json:
        print_json(result)
        return
    holds = result["holds"]["counts"]
    lots = result["lots"]["counts"]
    typer.echo(
        f"as of {instant.isoformat()}: expired {holds.get('holds', 0)} hold(s)"
        f" ({holds.get('amount', 0)} released on {holds.get('accounts', 0)} account(s));"
        f" expired {lots.get('amount', 0)} dust from {lots.get('lots', 0)} lot(s)"
        f" on {lots.get('entries', 0)} account(s);"
        f" released {lots.get('released', 0)} pending dust"
        f" (runs {result['holds']['id']}, {result['lots']['id']})"
    )


@app.command("reconcile")
def reconcile_command(
    as_json: JsonOption = False,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Rebuild cached balances and held totals from the journal and the holds"
            " (entries are never changed), record it, then check again.",
        ),
    ] = False,
    actor: Annotated[
        str | None, typer.Option(help="Who runs it (default: the operating-system user).")
    ] = None,
) -> None:
    """Check the ledger against itself; exit 0 when consistent, 1 when not.

    Each run is stored in dust_reconciliations. Every discrepancy is named: the check, the
    account, what was expected and what was found."""
    from sqlalchemy.exc import SQLAlchemyError

    from dust.ledger.reconcile import REPAIRABLE
    from dust.models.base import utcnow
    from dust.tasks import runs

    try:
        who = actor_option(actor.strip() if actor else None)
    except Exception:  # no user name in this environment (e.g. a bare container uid)
        raise fail("cannot tell which user is running this; give --actor NAME") from None
    if len(who) > 200:
        raise fail("--actor is longer than 200 characters")
    try:
        found: list[dict[str, Any]] = []
        result = _reconcile_once(runs.run_now("reconcile", utcnow(), actor=who, sink=found), found)
        if repair:
            accounts = {d["account_id"] for d in found if d["check"] in REPAIRABLE}
            changes = _repair(result["reconciliation_id"], accounts, who)
            if changes:
                again: list[dict[str, Any]] = []
                checked = runs.run_now("reconcile", utcnow(), actor=who, sink=again)
                result = {
                    **_reconcile_once(checked, again),
                    "repaired_reconciliation_id": result["reconciliation_id"],
                    "found_before_repair": found,
                }
            result["repairs"] = changes
    except SQLAlchemyError as exc:
        raise _database_error(exc) from None
    if as_json:
        print_json(result)
    else:
        _print_reconciliation(result)
    if not result["ok"]:
        raise typer.Exit(1)


def _reconcile_once(run: dict[str, Any], found: list[dict[str, Any]]) -> dict[str, Any]:
    from dust.ledger.reconcile import record_json
    from dust.models import Reconciliation
    from dust.worker.db import session_scope

    with session_scope(read_only=True) as session:
        record = session.get(Reconciliation, run["counts"]["reconciliation_id"])
        assert record is not None
        stored = record_json(record)
    return {
        "ok": stored["ok"],
        "as_of": stored["as_of"],
        "checked": stored["checked"],
        "discrepancies": found,
        "reconciliation_id": stored["id"],
        "job_run_id": run["id"],
    }


def _repair(reconciliation_id: int, accounts: set[int], actor: str) -> list[dict[str, Any]]:
    from dust.ledger.reconcile import repair_caches
    from dust.models import Reconciliation
    from dust.worker.db import session_scope

    with session_scope() as session:
        changes = repair_caches(session, accounts)
        record = session.get(Reconciliation, reconciliation_id)
        assert record is not None
        record.repaired = True
        record.repairs = json.dumps(changes)
        record.actor = actor
    return changes


def _print_reconciliation(result: dict[str, Any]) -> None:
    checked = result["checked"]
    events = ", ".join(f"{n} {s}" for s, n in sorted(checked.get("events", {}).items()))
    console.print(
        f"reconciliation {result['reconciliation_id']} as of {result['as_of']}:"
        f" {checked.get('accounts', 0)} accounts, {checked.get('entries', 0)} entries,"
        f" {checked.get('lots', 0)} lots, {checked.get('holds', 0)} holds,"
        f" {checked.get('orders', 0)} orders, events: {events or 'none'}"
    )
    for change in result.get("repairs") or []:
        console.print(
            f"repaired account {change['account_id']} {change['column']}:"
            f" {change['before']} -> {change['after']}"
        )
    if result["ok"]:
        console.print("ledger consistent")
        return
    found = result["discrepancies"]
    table = display.table("check", "account", "expected", "actual", "detail", title="Discrepancies")
    for d in found:
        detail = ", ".join(
            f"{k} {v}"
            for k, v in d.items()
            if k not in ("check", "account_id", "expected", "actual") and v is not None
        )
        table.add_row(
            d["check"],
            str(d.get("account_id", "")),
            str(d.get("expected", "")),
            str(d.get("actual", "")),
            detail,
        )
    console.print(table)
    console.print(f"{len(found)} discrepancies")


@app.command()
def jobs(
    job: Annotated[
        str | None, typer.Option(help="Only this job: expire_holds, expire_lots, reconcile.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
    as_json: JsonOption = False,
) -> None:
    """Recorded runs of the scheduled jobs, newest first."""
    from dust.tasks import runs
    from dust.worker.db import session_scope

    if job is not None and job not in runs.JOBS:
        raise fail(f"--job must be one of {', '.join(runs.JOBS)}, got {job!r}")
    with session_scope(read_only=True) as session:
        rows = runs.recent(session, limit, job)
    if as_json:
        print_json(rows)
        return
    table = display.table("id", "job", "period", "status", "started", "seconds", "counts")
    for row in rows:
        counts = " ".join(
            f"{k}={v}" for k, v in row["counts"].items() if k not in ("claimed_by", "chunks")
        )
        seconds = ""
        if row["finished_at"]:
            took = datetime.fromisoformat(row["finished_at"]) - datetime.fromisoformat(
                row["started_at"]
            )
            seconds = f"{took.total_seconds():.2f}"
        table.add_row(
            str(row["id"]),
            row["job"],
            row["period"],
            row["status"] + (f": {row['error']}" if row["error"] else ""),
            row["started_at"][:19].replace("T", " "),
            seconds,
            counts,
        )
    console.print(table)
