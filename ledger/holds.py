"""Holds: reserve → capture (possibly partial, rest released) | release | expire.

Invariant I2: ``account.held`` == Σ ``amount`` of the account's active holds. A hold leaves
``active`` exactly once; ``status = 'active'`` in the WHERE of every settling UPDATE makes a
second settlement a no-op even if two transactions race for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from dust.ledger import journal
from dust.ledger.accounts import CART_HOLDS, lock_accounts
from dust.ledger.expiry import among, forget_cached_rows, lock_due_accounts
from dust.ledger.journal import Ref
from dust.models import Account, Hold
from dust.models.base import utcnow


@dataclass(frozen=True)
class Reservation:
    status: str  # "reserved" | "rejected"
    available: int
    hold_id: int | None = None
    amount: int = 0
    reason: str | None = None

    def as_reply(self) -> dict[str, object]:
        if self.status == "reserved":
            return {
                "status": "reserved",
                "hold_id": self.hold_id,
                "amount": self.amount,
                "available": self.available,
            }
        return {"status": "rejected", "reason": self.reason, "available": self.available}


def available(account: Account) -> int:
    """What may be spent or reserved: the balance less holds and pending dust."""
    return account.balance - account.held - account.pending


def carts_with_active_holds(session: Session, cart_ids: Iterable[str]) -> set[str]:
    """Which of ``cart_ids`` have an active hold."""
    stmt = select(Hold.cart_id).where(Hold.cart_id.in_(set(cart_ids)), Hold.status == "active")
    return set(session.scalars(stmt))


def reserve(
    session: Session, account: Account, cart_id: str, amount: int, ttl_seconds: int
) -> Reservation:
    """Reserve ``amount`` of a locked ``account`` for ``cart_id``.

    A second reservation for the same cart and account replaces the first (same amount:
    nothing changes); when the new amount cannot be covered the old hold stays in place.
    """
    current = session.scalar(
        select(Hold)
        .where(Hold.account_id == account.id, Hold.cart_id == cart_id, Hold.status == "active")
        .with_for_update()
    )
    if current is not None and current.amount == amount:
        return Reservation("reserved", available(account), current.id, amount)
    could_use = available(account) + (current.amount if current else 0)
    if amount > could_use:
        return Reservation("rejected", max(available(account), 0), reason="insufficient_funds")
    now = utcnow()
    if current is not None:
        _settle(account, current, "released", now)
        session.flush()
    hold = Hold(
        account_id=account.id,
        cart_id=cart_id,
        amount=amount,
        captured=0,
        status="active",
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_seconds),
    )
    account.held += amount
    session.add(hold)
    session.flush()
    return Reservation("reserved", available(account), hold.id, amount)


def _settle(account: Account, hold: Hold, status: str, now: datetime, captured: int = 0) -> None:
    assert hold.status == "active", f"hold {hold.id} already {hold.status}"
    account.held -= hold.amount
    hold.status = status
    hold.captured = captured
    hold.settled_at = now


def capture(
    session: Session, account: Account, hold: Hold, amount: int, ref: Ref, order_id: str
) -> int:
    """Turn up to ``amount`` of an active hold into a debit; release the rest.

    Returns the amount captured (0 when ``amount`` is 0: the whole hold is released). A
    dust clawback under the ``debt`` policy may have taken the balance below what is held;
    then only what is still there is captured and the caller reports the rest as owed.
    """
    take = min(amount, hold.amount, max(0, available(account) + hold.amount))
    _settle(account, hold, "captured" if take else "released", utcnow(), captured=take)
    hold.order_id = order_id
    if take:
        journal.debit(session, account, take, ref, prefer_order_id=None)
    return take


def lock_holds(
    session: Session, hold_ids: list[int], also_lock: Iterable[int] = ()
) -> tuple[dict[int, Account], list[Hold]]:
    """Lock the holds' accounts and the accounts ``also_lock`` in one statement (id order),
    then re-read the holds that are still active.

    Accounts are always locked before holds and lots, so no two transactions wait on each
    other in opposite orders; every change to a hold happens under its account's lock.
    """
    owners = (
        session.scalars(select(Hold.account_id).where(Hold.id.in_(hold_ids))).all()
        if hold_ids
        else []
    )
    accounts = lock_accounts(session, [*owners, *also_lock])
    if not hold_ids:
        return accounts, []
    holds = session.scalars(
        select(Hold)
        .where(Hold.id.in_(hold_ids), Hold.status == "active")
        .order_by(Hold.id)
        .execution_options(populate_existing=True)
    ).all()
    return accounts, list(holds)


def lock_cart_holds(
    session: Session, cart_id: str | None, also_lock: Iterable[int] = ()
) -> tuple[dict[int, Account], list[Hold]]:
    """The active holds of ``cart_id`` (none: no cart), with their accounts and the
    accounts ``also_lock`` locked (:func:`lock_holds`); without a round trip for a cart
    of :func:`load_cart_holds` whose accounts are locked already."""
    known: dict[str, list[Hold]] = session.info.get(CART_HOLDS, {})
    if cart_id is not None and cart_id in known:
        holds = [hold for hold in known[cart_id] if hold.status == "active"]
        return lock_accounts(session, [*(h.account_id for h in holds), *also_lock]), holds
    ids = (
        session.scalars(
            select(Hold.id).where(Hold.cart_id == cart_id, Hold.status == "active")
        ).all()
        if cart_id
        else []
    )
    return lock_holds(session, list(ids), also_lock)


def load_cart_holds(session: Session, cart_ids: Iterable[str]) -> None:
    """:func:`lock_cart_holds` for many carts at once, kept (``session.info``) until
    :func:`forget_cart_holds`: the active holds' ids and accounts read, the accounts
    locked (id order), the holds read again under those locks (as :func:`lock_holds`).
    A hold reserved on one of the carts after the first read is not among them, as it
    would not be one at a time after the order's first read."""
    known: dict[str, list[Hold]] = session.info.setdefault(CART_HOLDS, {})
    carts = set(cart_ids) - set(known)
    if not carts:
        return
    found = session.execute(
        select(Hold.id, Hold.account_id).where(Hold.cart_id.in_(carts), Hold.status == "active")
    ).all()
    for cart_id in carts:
        known[cart_id] = []
    if not found:
        return
    lock_accounts(session, [account_id for _, account_id in found])
    holds = session.scalars(
        select(Hold)
        .where(Hold.id.in_([hold_id for hold_id, _ in found]), Hold.status == "active")
        .order_by(Hold.id)
        .execution_options(populate_existing=True)
    )
    for hold in holds:
        known[hold.cart_id].append(hold)


def forget_cart_holds(session: Session) -> None:
    session.info.pop(CART_HOLDS, None)


def release_holds(session: Session, accounts: dict[int, Account], holds: list[Hold]) -> int:
    """Release locked active holds; returns the total released."""
    now = utcnow()
    for hold in holds:
        _settle(accounts[hold.account_id], hold, "released", now)
    return sum(h.amount for h in holds)


def release_cart(session: Session, cart_id: str) -> int:
    """Release every active hold of ``cart_id``; returns the total released."""
    accounts, holds = lock_cart_holds(session, cart_id)
    return release_holds(session, accounts, holds)


def expire_holds(session: Session, as_of: datetime) -> int:
    """Expire every active hold whose ``expires_at`` is at or before ``as_of``.

    Returns how many holds expired. Running it again for the same instant changes nothing.
    """
    return expire_holds_chunk(session, as_of).holds


@dataclass(frozen=True)
class HoldExpiry:
    """What one chunk of hold expiry did; ``last_account_id`` is where the next starts
    (None: nothing was due after the cursor)."""

    accounts: int = 0
    holds: int = 0
    amount: int = 0
    last_account_id: int | None = None

    def as_counts(self) -> dict[str, int]:
        return {"accounts": self.accounts, "holds": self.holds, "amount": self.amount}


def expire_holds_chunk(
    session: Session, as_of: datetime, *, after_id: int = 0, limit: int | None = None
) -> HoldExpiry:
    """Expire the due active holds of the first ``limit`` accounts (all when None) with an
    id above ``after_id``, set-based: lock those accounts (id order), lower each one's
    ``held`` by the total of its due holds, mark the holds ``expired`` — three statements,
    whatever the number of holds. The caller commits."""
    session.flush()
    H = Hold.__table__
    A = Account.__table__
    due = and_(H.c.status == "active", H.c.expires_at <= as_of)
    ids = lock_due_accounts(session, due, H.c.account_id, after_id, limit)
    if not ids:
        return HoldExpiry()
    count, amount = session.execute(
        select(func.count(), func.coalesce(func.sum(H.c.amount), 0)).where(
            due, among(session, H.c.account_id, ids)
        )
    ).one()
    releasing = (
        select(func.coalesce(func.sum(H.c.amount), 0))
        .where(due, H.c.account_id == A.c.id)
        .scalar_subquery()
    )
    session.execute(update(A).where(among(session, A.c.id, ids)).values(held=A.c.held - releasing))
    session.execute(
        update(H)
        .where(due, among(session, H.c.account_id, ids))
        .values(status="expired", settled_at=as_of)
    )
    forget_cached_rows(session)
    return HoldExpiry(
        accounts=len(ids), holds=int(count), amount=int(amount), last_account_id=ids[-1]
    )
