"""Read models: the JSON shapes of ``dust balance`` and ``dust history`` (docs/CONTRACT.md §6.1)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.accounts import customer_accounts
from models import Account, Entry
from models.tables import DUST


def balance(session: Session, customer_id: str) -> dict[str, Any]:
    """``{"customer_id", "dust": {...}, "store_credit": [...]}``; zeros when unknown."""
    dust = {"balance": 0, "held": 0, "available": 0}
    store_credit = []
    for account in customer_accounts(session, customer_id):
        numbers = {
            "balance": account.balance,
            "held": account.held,
            "available": account.balance - account.held,
        }
        if account.kind == DUST:
            dust = numbers
        else:
            store_credit.append(
                {"currency_code": account.currency_code, "code": account.code, **numbers}
            )
    return {"customer_id": customer_id, "dust": dust, "store_credit": store_credit}


def history(session: Session, customer_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """The customer's entries, newest first."""
    rows = session.execute(
        select(Entry, Account)
        .join(Account, Account.id == Entry.account_id)
        .where(Account.customer_id == customer_id)
        .order_by(Entry.id.desc())
        .limit(limit)
    ).all()
    return [
        {
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
        for entry, account in rows
    ]
