"""``dust publish`` and ``dust events``: send events; list, show, replay and resolve what was
recorded. Replays and resolutions go through a worker (``dust.admin.*``), their reply awaited."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import and_, or_, select

from dust.cli import common, display
from dust.cli.common import ActorOption, JsonOption, console, fail, print_json
from dust.ledger import reports
from dust.models import (
    Event,
    EventConflict,
    EventResolution,
)
from dust.worker.db import session_scope
from dust.worker.names import MAX_REASON, REPLAY, REPLAYABLE, RESOLVE
from dust.worker.publisher import publish_envelopes

app = typer.Typer()
events_app = typer.Typer(help="Inspect recorded events.", invoke_without_command=True)
app.add_typer(events_app, name="events")

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


# -- recorded events ------------------------------------------------------------------


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


# -- replays ---------------------------------------------------------------------------


@events_app.command("replay")
def events_replay(
    event_id: Annotated[str | None, typer.Argument(help="One event to replay.")] = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status", help="Replay every event with this status: failed or needs_attention."
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="With --status: only events received since then (ISO 8601)."),
    ] = None,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run events again through the exactly-once path, once their cause is fixed.

    A processed (or ignored, rejected) event is left as it is, and reported as such."""
    if (event_id is None) == (status is None):
        raise fail("give either EVENT_ID or --status failed|needs_attention")
    if status is not None and status not in REPLAYABLE:
        raise fail(f"--status must be failed or needs_attention, got {status!r}")
    if since is not None and status is None:
        raise fail("--since goes with --status")
    since_at = common.instant(since, "--since")
    who = common.actor(actor)
    ids: Iterator[str] = iter([event_id]) if event_id is not None else _event_ids(status, since_at)
    outcomes: list[dict[str, Any]] = []
    errors = 0
    for current in ids:
        try:
            reply = common.call(REPLAY, {"event_id": current, "actor": who})
        except typer.Exit:
            if event_id is not None:
                raise
            errors += 1  # its one line is printed; go on with the others
            outcomes.append({"status": "error", "event_id": current})
            continue
        outcomes.append(reply)
        if not as_json:
            typer.echo(_replay_line(reply))
    if as_json:
        print_json(outcomes if event_id is None else outcomes[0])
    elif event_id is None:
        counts = Counter(o.get("outcome", "error") for o in outcomes)
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to replay"
        typer.echo(f"replayed {len(outcomes)} event(s): {summary}")
    if errors:
        raise typer.Exit(1)
    # Still needs an admin after the replay: not done (resolve it, or fix and replay).
    if any(o.get("outcome") in ("needs_attention", "failed") for o in outcomes):
        raise typer.Exit(1)


def _replay_line(reply: dict[str, Any]) -> str:
    if reply["outcome"] == "unchanged":
        return f"{reply['event_id']}: {reply['reason']}"
    line = f"{reply['event_id']}: {reply['previous']} -> {reply['outcome']}"
    return line + (f" ({reply['reason']})" if reply.get("reason") else "")


def _event_ids(status: str | None, since: datetime | None) -> Iterator[str]:
    """Ids of the events to replay, oldest first, a page at a time (keyset), so events that
    are still in that status after their replay are not picked up twice."""

    after: tuple[datetime, str] | None = None
    while True:
        stmt = select(Event.received_at, Event.event_id).where(Event.status == status)
        if since is not None:
            stmt = stmt.where(Event.received_at >= since)
        if after is not None:
            stmt = stmt.where(
                or_(
                    Event.received_at > after[0],
                    and_(Event.received_at == after[0], Event.event_id > after[1]),
                )
            )
        stmt = stmt.order_by(Event.received_at, Event.event_id).limit(200)
        with session_scope(read_only=True) as session:
            page = session.execute(stmt).all()
        if not page:
            return
        for _received_at, current in page:
            yield current
        after = (page[-1][0], page[-1][1])


# -- resolutions ----------------------------------------------------------------------


@events_app.command("resolve")
def events_resolve(
    event_id: Annotated[str, typer.Argument(help="The needs_attention or failed event.")],
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why it is closed (required; kept).")
    ] = None,
    credit: Annotated[
        str | None, typer.Option("--credit", help="Correct the ledger: credit this amount.")
    ] = None,
    debit: Annotated[
        str | None, typer.Option("--debit", help="Correct the ledger: debit this amount.")
    ] = None,
    kind: Annotated[
        str | None, typer.Option("--kind", help="Of the correction: dust or store_credit.")
    ] = None,
    currency: Annotated[
        str | None, typer.Option("--currency", help="Of a store-credit correction, e.g. usd.")
    ] = None,
    customer: Annotated[
        str | None,
        typer.Option("--customer", help="Of the correction (default: the event's customer_id)."),
    ] = None,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Close a needs_attention or failed event with a reason, optionally posting one
    correcting adjustment (--credit or --debit AMOUNT --kind ...); reconciliation then no
    longer counts it. The event's record and the resolution are kept."""
    if reason is None or not reason.strip():
        raise fail("--reason is required: say why the event is closed, it is kept")
    if len(reason.strip()) > MAX_REASON:
        raise fail(f"--reason is longer than {MAX_REASON} characters")
    request: dict[str, Any] = {
        "event_id": event_id,
        "reason": reason.strip(),
        "actor": common.actor(actor),
    }
    if credit is not None and debit is not None:
        raise fail("give --credit or --debit, not both")
    amount = credit if credit is not None else debit
    if amount is None:
        if kind is not None or currency is not None or customer is not None:
            raise fail("--kind, --currency and --customer go with --credit or --debit")
    else:
        request.update(_correction(event_id, amount, credit is not None, kind, currency, customer))
    reply = common.call(RESOLVE, request)
    if as_json:
        print_json(reply)
        return
    line = f"{reply['event_id']}: {reply['previous']} -> resolved by {reply['actor']}"
    entry, account = reply.get("entry"), reply.get("account")
    if entry and account:
        verb = "credited" if entry["direction"] == "credit" else "debited"
        what = common.amount_label(account["kind"], account["currency_code"])
        line += f"; {verb} {entry['amount']} {what} ({account['customer_id']}, entry {entry['id']})"
    typer.echo(line)


def _correction(
    event_id: str,
    amount: str,
    is_credit: bool,
    kind: str | None,
    currency: str | None,
    customer: str | None,
) -> dict[str, Any]:
    number = common.whole(amount, "--credit" if is_credit else "--debit", minimum=1)
    kind, currency = common.kind_and_currency(
        kind, currency, "--kind is required with a correction"
    )
    return {
        "customer_id": common.customer(customer) if customer else _event_customer(event_id),
        "direction": "credit" if is_credit else "debit",
        "amount": number,
        "kind": kind,
        "currency_code": currency,
    }


def _event_customer(event_id: str) -> str:
    """The customer the event speaks of (``data.customer_id``), for a correction."""

    with session_scope(read_only=True) as session:
        row = session.get(Event, event_id)
        envelope = row.envelope if row is not None else None
    if envelope is None:
        raise fail(f"no event with id {event_id}")
    try:
        customer = json.loads(envelope).get("data", {}).get("customer_id")
    except (ValueError, AttributeError):
        customer = None
    if not isinstance(customer, str) or not customer:
        raise fail(f"event {event_id} names no customer: give --customer for the correction")
    return customer
