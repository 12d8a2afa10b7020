"""Customers' accounts: ``dust balance``, ``history``, and the admin adjustments ``credit``,
``debit`` and ``claim`` (validated here, applied by a worker, its reply awaited)."""

from __future__ import annotations

from typing import Annotated

import typer

from dust.cli import common, display
from dust.cli.common import ActorOption, JsonOption, console, fail, print_json
from dust.ledger import reports
from dust.worker.db import session_scope
from dust.worker.names import ADJUST, CLAIM, MAX_KEY, MAX_REASON
from dust.worker.settings import get_settings

app = typer.Typer()


# -- reports ---------------------------------------------------------------------------


@app.command()
def balance(customer_id: str, as_json: JsonOption = False) -> None:
    """A customer's dust and store-credit balances."""

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


# -- adjustments -----------------------------------------------------------------------


def _adjust(
    direction: str,
    customer_id: str,
    amount: str,
    kind: str | None,
    currency: str | None,
    reason: str | None,
    idempotency_key: str | None,
    create: bool,
    actor: str | None,
    as_json: bool,
) -> None:
    customer = common.customer(customer_id)
    number = common.whole(amount, "AMOUNT", minimum=1)
    kind, currency = common.kind_and_currency(kind, currency, "--kind is required")
    if reason is None or not reason.strip():
        raise fail("--reason is required: say why, it is kept with the entry")
    if len(reason.strip()) > MAX_REASON:
        raise fail(f"--reason is longer than {MAX_REASON} characters")
    if idempotency_key is not None and not (0 < len(idempotency_key.strip()) <= MAX_KEY):
        raise fail(f"--idempotency-key must be 1 to {MAX_KEY} characters")
    reply = common.call(
        ADJUST,
        {
            "customer_id": customer,
            "direction": direction,
            "amount": number,
            "kind": kind,
            "currency_code": currency,
            "reason": reason.strip(),
            "actor": common.actor(actor),
            "idempotency_key": idempotency_key.strip() if idempotency_key else None,
            "create": create,
        },
    )
    if as_json:
        print_json(reply)
        return
    entry, account = reply["entry"], reply["account"]
    what = common.amount_label(account["kind"], account["currency_code"])
    prefix = "already posted (same idempotency key): " if reply["repeat"] else ""
    verb = "credited" if entry["direction"] == "credit" else "debited"
    typer.echo(
        f"{prefix}{verb} {entry['amount']} {what} {'to' if verb == 'credited' else 'from'}"
        f" {customer} (entry {entry['id']}, by {entry['actor']}); balance {account['balance']},"
        f" available {account['available']}"
    )


KindOption = Annotated[str | None, typer.Option("--kind", help="dust or store_credit.")]
CurrencyOption = Annotated[
    str | None, typer.Option("--currency", help="Currency of store credit, e.g. usd.")
]
ReasonOption = Annotated[
    str | None, typer.Option("--reason", help="Why (required; kept as the entry's memo).")
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key", help="Posting again with the same key returns the first entry."
    ),
]


@app.command()
def credit(
    customer_id: Annotated[str, typer.Argument(help="The customer.")],
    amount: Annotated[str, typer.Argument(help="Whole points, or minor units of money.")],
    kind: KindOption = None,
    currency: CurrencyOption = None,
    reason: ReasonOption = None,
    idempotency_key: KeyOption = None,
    create: Annotated[
        bool, typer.Option("--create", help="Open the account of a customer Dust has not seen.")
    ] = False,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Admin credit (audited). Dust credited gets a lot expiring DUST_POINTS_TTL_DAYS from now.

    A customer with no account yet is refused unless --create is given."""
    _adjust(
        "credit",
        customer_id,
        amount,
        kind,
        currency,
        reason,
        idempotency_key,
        create,
        actor,
        as_json,
    )


@app.command()
def debit(
    customer_id: Annotated[str, typer.Argument(help="The customer.")],
    amount: Annotated[str, typer.Argument(help="Whole points, or minor units of money.")],
    kind: KindOption = None,
    currency: CurrencyOption = None,
    reason: ReasonOption = None,
    idempotency_key: KeyOption = None,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Admin debit (audited). Never takes the available balance below zero."""
    _adjust(
        "debit", customer_id, amount, kind, currency, reason, idempotency_key, False, actor, as_json
    )


# -- claims ----------------------------------------------------------------------------


@app.command()
def claim(
    code: Annotated[str, typer.Argument(help="The anonymous account's code, SC-....")],
    customer_id: Annotated[str, typer.Argument(help="The customer who receives it.")],
    create: Annotated[
        bool, typer.Option("--create", help="Accept a customer Dust has not seen yet.")
    ] = False,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move an anonymous store-credit account's balance to the customer (one transaction)."""
    customer = common.customer(customer_id)
    if not code.strip() or len(code.strip()) > 40:
        raise fail("CODE must be 1 to 40 characters (e.g. SC-ABCDE-FGHIJ-KLMNO-PQRST)")
    reply = common.call(
        CLAIM,
        {
            "code": code.strip(),
            "customer_id": customer,
            "actor": common.actor(actor),
            "create": create,
        },
    )
    if as_json:
        print_json(reply)
        return
    account = reply["account"]
    typer.echo(
        f"claimed {reply['amount']} {account['currency_code']} store credit of {reply['code']}"
        f" for {customer} (entry {reply['entry']['id']}); balance {account['balance']},"
        f" available {account['available']}"
    )
