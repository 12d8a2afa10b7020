"""Read models: the JSON shapes of ``dust balance``, ``dust history`` and ``dust events``
(docs/CONTRACT.md §6.1), and what the store owes (``dust.overview``, §5.3)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from decimal import ROUND_DOWN, Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dust.ledger.accounts import customer_accounts
from dust.models import Account, Entry, Event
from dust.models.tables import DUST, STORE_CREDIT


def balance(
    session: Session, customer_id: str, redeem_values: dict[str, str] | None = None
) -> dict[str, Any]:
    """``{"customer_id", "dust": {...}, "store_credit": [...]}``; zeros when unknown.
    With ``redeem_values`` (``{"default": "1", "<currency>": ...}``, from the settings) the
    object also carries them, so every client shows dust's money value the same way."""
    dust = {"balance": 0, "held": 0, "pending": 0, "available": 0}
    store_credit = []
    for account in customer_accounts(session, customer_id):
        numbers = {
            "balance": account.balance,
            "held": account.held,
            "available": account.balance - account.held - account.pending,
        }
        if account.kind == DUST:
            # Pending dust (DUST_PENDING_DAYS) is in the balance, not available.
            dust = {**numbers, "pending": account.pending}
            dust = {k: dust[k] for k in ("balance", "held", "pending", "available")}
        else:
            store_credit.append(
                {"currency_code": account.currency_code, "code": account.code, **numbers}
            )
    reply = {"customer_id": customer_id, "dust": dust, "store_credit": store_credit}
    if redeem_values is not None:
        reply["redeem_values"] = dict(redeem_values)
    return reply


def entry_json(entry: Entry, account: Account) -> dict[str, Any]:
    """One entry as ``dust history --json`` and ``dust.history`` show it."""
    return {
        "id": entry.id,
        "created_at": entry.created_at.isoformat(),
        "kind": account.kind,
        "currency_code": account.currency_code,
        "direction": entry.direction,
        "amount": entry.amount,
        "balance_after": entry.balance_after,
        "reason": entry.reason,
        "reference_type": entry.reference_type,
        "reference_id": entry.reference_id,
        "event_id": entry.event_id,
        "actor": entry.actor,
        "memo": entry.memo,
        "forgiven": entry.forgiven,
    }


def history(
    session: Session,
    customer_id: str,
    limit: int = 100,
    *,
    kind: str | None = None,
    currency_code: str | None = None,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """The customer's entries, newest first (entry ids grow with time): of one ``kind``
    and store-credit currency when given, older than entry ``before_id`` when given."""
    query = (
        select(Entry, Account)
        .join(Account, Account.id == Entry.account_id)
        .where(Account.customer_id == customer_id)
    )
    if kind is not None:
        query = query.where(Account.kind == kind)
    if currency_code is not None:
        query = query.where(Account.currency_code == currency_code)
    if before_id is not None:
        query = query.where(Entry.id < before_id)
    rows = session.execute(query.order_by(Entry.id.desc()).limit(limit)).all()
    return [entry_json(entry, account) for entry, account in rows]


def history_page(
    session: Session,
    customer_id: str,
    kind: str,
    currency_code: str | None,
    limit: int,
    before: str | None,
) -> dict[str, Any]:
    """``{"entries": [...], "next": cursor | None}``: one page of :func:`history`; ``next``
    is given to the next call as ``before`` (None: no older entries)."""
    before_id = decode_cursor(before) if before is not None else None
    entries = history(
        session,
        customer_id,
        limit + 1,
        kind=kind,
        currency_code=currency_code,
        before_id=before_id,
    )
    more = len(entries) > limit
    entries = entries[:limit]
    return {"entries": entries, "next": encode_cursor(entries[-1]["id"]) if more else None}


_CURSOR_PREFIX = "before:"


def encode_cursor(entry_id: int) -> str:
    """An opaque page cursor: clients pass it back unchanged, never build one."""
    raw = f"{_CURSOR_PREFIX}{entry_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The entry id of a cursor from :func:`encode_cursor`; ValueError when it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a history cursor") from None
    number = raw.removeprefix(_CURSOR_PREFIX)
    if raw == number or not (number.isascii() and number.isdigit()) or len(number) > 19:
        raise ValueError("not a history cursor")
    return int(number)


# -- events ----------------------------------------------------------------------------


def event_json(event: Event, full: bool = False) -> dict[str, Any]:
    """One recorded event as ``dust events --json`` shows it (``full``: as ``show``, with
    ``detail`` and the ``envelope`` as received)."""
    result = {
        "event_id": event.event_id,
        "name": event.name,
        "status": event.status,
        "reason": event.reason,
        "occurred_at": event.occurred_at.isoformat() if event.occurred_at else None,
        "received_at": event.received_at.isoformat(),
        "attempts": event.attempts,
    }
    if full:
        result["detail"] = json.loads(event.detail) if event.detail else None
        result["envelope"] = stored_envelope(event.envelope)
    return result


def stored_envelope(text: str) -> Any:
    """An envelope as stored: the JSON object, or the text when it is not one."""
    if text.startswith("{"):
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            return text
    return text


def events(session: Session, statuses: Sequence[str] | None, limit: int) -> list[dict[str, Any]]:
    """Recorded events, newest first (by arrival), of the given statuses when given."""
    stmt = select(Event).order_by(Event.received_at.desc(), Event.event_id).limit(limit)
    if statuses:
        stmt = stmt.where(Event.status.in_(list(statuses)))
    return [event_json(e) for e in session.scalars(stmt)]


def event_counts(session: Session, statuses: Sequence[str]) -> dict[str, int]:
    """How many recorded events have each of ``statuses`` (0 when none)."""
    rows = session.execute(
        select(Event.status, func.count())
        .where(Event.status.in_(list(statuses)))
        .group_by(Event.status)
    ).all()
    found = dict(rows)
    return {status: int(found.get(status, 0)) for status in statuses}


# -- what the store owes ---------------------------------------------------------------


def owed(session: Session, redeem_values: dict[str, str]) -> dict[str, Any]:
    """What the store owes its customers, from the accounts' balances.

    ``dust``: the dust outstanding (every dust account's balance, pending included), of
    which held and pending. ``currencies``: per currency with store credit or a
    redemption value of its own (``DUST_REDEEM_VALUES``), the store credit outstanding
    (balances of every store-credit account, a guest's anonymous one included, in minor
    units) and held, and the dust outstanding's money value at the currency's redemption
    value (``redeem_values``, else ``default``), in whole minor units rounded down: what
    that dust would pay for, never more than Dust would charge (§2.2)."""
    dust_row = session.execute(
        select(
            func.coalesce(func.sum(Account.balance), 0),
            func.coalesce(func.sum(Account.held), 0),
            func.coalesce(func.sum(Account.pending), 0),
            func.count(),
        ).where(Account.kind == DUST)
    ).one()
    dust_total = int(dust_row[0])
    credit_rows = session.execute(
        select(
            Account.currency_code,
            func.sum(Account.balance),
            func.sum(Account.held),
            func.count(),
        )
        .where(Account.kind == STORE_CREDIT)
        .group_by(Account.currency_code)
    ).all()
    credit = {row[0]: (int(row[1]), int(row[2]), int(row[3])) for row in credit_rows}
    codes = sorted(set(credit) | {c for c in redeem_values if c != "default"})
    currencies = []
    for code in codes:
        value = Decimal(redeem_values.get(code, redeem_values["default"]))
        outstanding, held, accounts = credit.get(code, (0, 0, 0))
        currencies.append(
            {
                "currency_code": code,
                "store_credit": {"outstanding": outstanding, "held": held, "accounts": accounts},
                "redeem_value": str(value),
                "dust_value": int((dust_total * value).to_integral_value(ROUND_DOWN)),
            }
        )
    return {
        "dust": {
            "outstanding": dust_total,
            "held": int(dust_row[1]),
            "pending": int(dust_row[2]),
            "accounts": int(dust_row[3]),
        },
        "currencies": currencies,
        "redeem_values": dict(redeem_values),
    }
