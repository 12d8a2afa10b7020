"""Read models: the JSON shapes of ``dust balance`` and ``dust history`` (docs/CONTRACT.md §6.1)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dust.ledger.accounts import customer_accounts
from dust.models import Account, Entry
from dust.models.tables import DUST


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
