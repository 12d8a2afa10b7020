"""Reconciliation: the ledger checked against itself, set-based (one query per check).

Each check returns discrepancies as dicts ``{"check", "account_id", "expected", "actual"}``
(or the ids that identify the row). ``ok`` is false when the ledger disagrees with itself
or when events are ``failed`` / ``needs_attention`` (work left undone, CONTRACT §5).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select
from sqlalchemy.orm import Session

from models import Account, Entry, Event, Hold, Lot, Order
from models.base import utcnow

SIGNED = case((Entry.direction == "credit", Entry.amount), else_=-Entry.amount)


def _journal_totals() -> Any:
    return (
        select(Entry.account_id, func.sum(SIGNED).label("total"))
        .group_by(Entry.account_id)
        .subquery()
    )


def check_balances(session: Session) -> list[dict[str, Any]]:
    """Cached ``balance`` == Σ credits − Σ debits, for every account."""
    totals = _journal_totals()
    journal = func.coalesce(totals.c.total, 0)
    rows = session.execute(
        select(Account.id, Account.balance, journal)
        .outerjoin(totals, totals.c.account_id == Account.id)
        .where(Account.balance != journal)
    )
    return [
        {"check": "balance", "account_id": a, "expected": int(j), "actual": b} for a, b, j in rows
    ]


def check_held(session: Session) -> list[dict[str, Any]]:
    """Cached ``held`` == Σ active holds."""
    active = (
        select(Hold.account_id, func.sum(Hold.amount).label("total"))
        .where(Hold.status == "active")
        .group_by(Hold.account_id)
        .subquery()
    )
    expected = func.coalesce(active.c.total, 0)
    rows = session.execute(
        select(Account.id, Account.held, expected)
        .outerjoin(active, active.c.account_id == Account.id)
        .where(Account.held != expected)
    )
    return [{"check": "held", "account_id": a, "expected": int(e), "actual": h} for a, h, e in rows]


def check_lots(session: Session) -> list[dict[str, Any]]:
    """Σ lots.remaining == max(dust balance, 0) for every dust account."""
    lots = (
        select(Lot.account_id, func.sum(Lot.remaining).label("total"))
        .group_by(Lot.account_id)
        .subquery()
    )
    remaining = func.coalesce(lots.c.total, 0)
    expected = case((Account.balance > 0, Account.balance), else_=literal(0))
    rows = session.execute(
        select(Account.id, expected, remaining)
        .outerjoin(lots, lots.c.account_id == Account.id)
        .where(Account.kind == "dust", remaining != expected)
    )
    return [
        {"check": "lots", "account_id": a, "expected": int(e), "actual": int(r)} for a, e, r in rows
    ]


def check_available(session: Session) -> list[dict[str, Any]]:
    """No negative available balance, except a dust account in debt from a clawback."""
    rows = session.execute(
        select(Account.id, Account.balance, Account.held).where(
            Account.balance < Account.held,
            or_(Account.kind == "store_credit", Account.balance >= 0),
        )
    )
    return [
        {"check": "available", "account_id": a, "expected": ">= 0", "actual": b - h}
        for a, b, h in rows
    ]


def check_stale_holds(session: Session, as_of: datetime) -> list[dict[str, Any]]:
    """No hold left active past its expiry."""
    rows = session.execute(
        select(Hold.id, Hold.account_id, Hold.expires_at).where(
            Hold.status == "active", Hold.expires_at < as_of
        )
    )
    return [
        {"check": "stale_hold", "hold_id": h, "account_id": a, "expires_at": e.isoformat()}
        for h, a, e in rows
    ]


def check_orders(session: Session) -> list[dict[str, Any]]:
    """Every placed order either earned dust or recorded why not."""
    rows = session.execute(
        select(Order.order_id).where(
            Order.placed_event_id.is_not(None),
            and_(Order.earned == 0, Order.no_earn_reason.is_(None)),
        )
    )
    return [{"check": "order_not_earned", "order_id": o} for (o,) in rows]


def check_events(session: Session) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Count events by status; ``failed`` and ``needs_attention`` are work left undone."""
    counts = dict(
        session.execute(select(Event.status, func.count()).group_by(Event.status)).tuples().all()
    )
    undone = session.execute(
        select(Event.event_id, Event.status, Event.reason).where(
            Event.status.in_(["failed", "needs_attention"])
        )
    )
    return counts, [
        {"check": "event", "event_id": e, "status": s, "reason": r} for e, s, r in undone
    ]


def reconcile(session: Session, as_of: datetime | None = None) -> dict[str, Any]:
    """Run every check; the JSON of ``dust reconcile --json``."""
    as_of = as_of or utcnow()
    discrepancies = [
        *check_balances(session),
        *check_held(session),
        *check_lots(session),
        *check_available(session),
        *check_stale_holds(session, as_of),
        *check_orders(session),
    ]
    event_counts, undone = check_events(session)
    checked = {
        "accounts": session.scalar(select(func.count()).select_from(Account)) or 0,
        "entries": session.scalar(select(func.count()).select_from(Entry)) or 0,
        "holds": session.scalar(select(func.count()).select_from(Hold)) or 0,
        "lots": session.scalar(select(func.count()).select_from(Lot)) or 0,
        "orders": session.scalar(select(func.count()).select_from(Order)) or 0,
        "events": event_counts,
    }
    return {
        "ok": not discrepancies and not undone,
        "as_of": as_of.isoformat(),
        "checked": checked,
        "discrepancies": discrepancies + undone,
    }
