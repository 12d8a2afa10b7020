"""``dust events resolve``: close a ``needs_attention`` or ``failed`` event, audited.

Like the other admin commands it validates here, sends ``dust.admin.resolve`` on
``dust.requests`` and waits for the worker's reply (``tasks/resolutions.py``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from dust.worker import cli_admin as admin  # its helpers, used once both modules are loaded
from dust.worker.cli import JsonOption, events_app, fail, print_json

RESOLVE = "dust.admin.resolve"
ActorOption = Annotated[
    str | None,
    typer.Option("--actor", help="Who is doing this (default: the operating-system user)."),
]


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
    if len(reason.strip()) > 2000:
        raise fail("--reason is longer than 2000 characters")
    request: dict[str, Any] = {
        "event_id": event_id,
        "reason": reason.strip(),
        "actor": admin._actor(actor),
    }
    if credit is not None and debit is not None:
        raise fail("give --credit or --debit, not both")
    amount = credit if credit is not None else debit
    if amount is None:
        if kind is not None or currency is not None or customer is not None:
            raise fail("--kind, --currency and --customer go with --credit or --debit")
    else:
        request.update(_correction(event_id, amount, credit is not None, kind, currency, customer))
    reply = admin._call(RESOLVE, request)
    if as_json:
        print_json(reply)
        return
    line = f"{reply['event_id']}: {reply['previous']} -> resolved by {reply['actor']}"
    entry, account = reply.get("entry"), reply.get("account")
    if entry:
        verb = "credited" if entry["direction"] == "credit" else "debited"
        what = admin._amount_label(account["kind"], account["currency_code"])
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
    number = admin._whole(amount, "--credit" if is_credit else "--debit", minimum=1)
    if kind is None:
        raise fail("--kind is required with a correction: dust or store_credit")
    kind = kind.strip().lower()
    if kind not in ("dust", "store_credit"):
        raise fail(f"--kind must be dust or store_credit, got {kind!r}")
    if kind == "store_credit":
        if currency is None:
            raise fail("--currency is required for store_credit (e.g. --currency usd)")
        if not admin.CURRENCY.match(currency.strip()):
            raise fail(f"--currency must be a three-letter code such as usd, got {currency!r}")
        currency = currency.strip().lower()
    elif currency is not None:
        raise fail("--currency is only for --kind store_credit (dust has no currency)")
    return {
        "customer_id": admin._customer(customer) if customer else _event_customer(event_id),
        "direction": "credit" if is_credit else "debit",
        "amount": number,
        "kind": kind,
        "currency_code": currency,
    }


def _event_customer(event_id: str) -> str:
    """The customer the event speaks of (``data.customer_id``), for a correction."""
    from dust.models import Event
    from dust.worker.db import session_scope

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
