"""The only code that writes entries and moves balances.

Invariants kept here (callers hold the account's row lock, see ``accounts.lock_accounts``):

* I1  ``account.balance`` == Σ credits − Σ debits of its entries (updated together).
* I3  a debit never takes ``balance − held`` below zero, except a clawback under the
      ``debt`` policy (``allow_debt=True``), which only dust accounts may incur.
* I4  for a dust account, Σ ``lots.remaining`` == max(balance, 0): every dust credit first
      repays debt, then fills a lot; every dust debit draws lots soonest-expiring first and
      records each draw in ``dust_lot_movements``.
* I6  cached ``account.pending`` == Σ ``remaining`` of its pending lots (``pending_until``
      set): a pending credit adds its lot, a clawback that draws one takes it off. Spending
      never draws a pending lot (available is ``balance − held − pending``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, case, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from dust.ledger.errors import InsufficientFunds
from dust.models import Account, Entry, Lot, LotMovement
from dust.models.base import utcnow
from dust.models.bulk import insert_rows, update_rows
from dust.models.tables import DUST


@dataclass(frozen=True)
class Ref:
    """Why an entry exists: reason, what it refers to, and who/what caused it."""

    reason: str
    reference_type: str
    reference_id: str
    idempotency_key: str | None = None
    event_id: str | None = None
    actor: str | None = None
    memo: str | None = None


def _check_amount(amount: int) -> None:
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise ValueError(f"entry amount must be a positive integer, got {amount!r}")


def _entry_row(
    account_id: int,
    direction: str,
    amount: int,
    balance_after: int,
    ref: Ref,
    forgiven: int,
    created_at: datetime,
) -> dict[str, object]:
    """The columns of one entry (``_write`` and ``credit_many`` both write them)."""
    return {
        "account_id": account_id,
        "direction": direction,
        "amount": amount,
        "balance_after": balance_after,
        "reason": ref.reason,
        "reference_type": ref.reference_type,
        "reference_id": ref.reference_id,
        "idempotency_key": ref.idempotency_key,
        "event_id": ref.event_id,
        "actor": ref.actor,
        "memo": ref.memo,
        "forgiven": forgiven,
        "created_at": created_at,
    }


def _write(
    session: Session, account: Account, direction: str, amount: int, ref: Ref, forgiven: int = 0
) -> Entry:
    _check_amount(amount)
    account.balance += amount if direction == "credit" else -amount
    entry = Entry(
        **_entry_row(account.id, direction, amount, account.balance, ref, forgiven, utcnow())
    )
    session.add(entry)
    session.flush()
    return entry


def credit(
    session: Session,
    account: Account,
    amount: int,
    ref: Ref,
    *,
    expires_at: datetime | None = None,
    order_id: str | None = None,
    give_back: Entry | None = None,
    pending_until: datetime | None = None,
) -> Entry:
    """Credit ``amount``. For dust: repay debt first, then either give back to the lots
    that ``give_back`` (an earlier debit) drew from, or open a new lot expiring at
    ``expires_at`` (none: never expires), pending until ``pending_until`` when given."""
    debt = max(0, -account.balance)
    entry = _write(session, account, "credit", amount, ref)
    if account.kind != DUST:
        return entry
    to_lots = amount - min(amount, debt)
    if to_lots and give_back is not None:
        to_lots -= _give_back(session, entry, give_back, to_lots)
    if to_lots:
        session.add(
            Lot(
                account_id=account.id,
                entry_id=entry.id,
                amount=to_lots,
                remaining=to_lots,
                expires_at=expires_at,
                order_id=order_id,
                created_at=utcnow(),
                pending_until=pending_until,
            )
        )
        if pending_until is not None:
            account.pending += to_lots
        session.flush()
    return entry


@dataclass(frozen=True)
class Credit:
    """One credit of :func:`credit_many`: ``amount`` to a locked ``account``."""

    account: Account
    amount: int
    ref: Ref
    expires_at: datetime | None = None
    order_id: str | None = None
    pending_until: datetime | None = None


def credit_many(session: Session, credits: list[Credit]) -> None:
    """Post many credits at once: one INSERT of their entries, one of their lots, one
    UPDATE of the balances. The same entries, balances and lots as :func:`credit` called
    for each in turn (an account credited twice gets its entries in the given order)."""
    if not credits:
        return
    session.flush()  # the accounts' balances as the session knows them are the database's
    now = utcnow()
    balances: dict[int, int] = {}
    pendings: dict[int, int] = {}
    entries: list[dict[str, object]] = []
    to_lots: list[int] = []
    for one in credits:
        _check_amount(one.amount)
        account = one.account
        before = balances.get(account.id, account.balance)
        balances[account.id] = after = before + one.amount
        entries.append(_entry_row(account.id, "credit", one.amount, after, one.ref, 0, now))
        debt = max(0, -before)
        to_lots.append(one.amount - min(one.amount, debt) if account.kind == DUST else 0)
        if one.pending_until is not None:
            pendings[account.id] = pendings.get(account.id, account.pending) + to_lots[-1]
    entry_ids = insert_rows(session, Entry.__table__, entries, returning="id")
    lots = [
        {
            "account_id": one.account.id,
            "entry_id": entry_id,
            "amount": amount,
            "remaining": amount,
            "expires_at": one.expires_at,
            "order_id": one.order_id,
            "created_at": now,
        }
        # Only when some lot is pending: the same statement as before otherwise.
        | ({"pending_until": one.pending_until} if pendings else {})
        for one, entry_id, amount in zip(credits, entry_ids, to_lots, strict=True)
        if amount
    ]
    insert_rows(session, Lot.__table__, lots)
    rows = [{"id": i, "balance": b} for i, b in balances.items()]
    if pendings:
        for row in rows:
            row["pending"] = pendings.get(row["id"], _pending_of(credits, row["id"]))
    update_rows(session, Account.__table__, rows)
    for one in credits:  # the session's accounts show the new balances, as written
        set_committed_value(one.account, "balance", balances[one.account.id])
        if pendings:
            set_committed_value(
                one.account, "pending", pendings.get(one.account.id, one.account.pending)
            )


def _pending_of(credits: list[Credit], account_id: int) -> int:
    return next(one.account.pending for one in credits if one.account.id == account_id)


def _give_back(session: Session, entry: Entry, debit: Entry, limit: int) -> int:
    """Return up to ``limit`` to the lots ``debit`` drew from (latest-expiring first)."""
    rows = session.execute(
        select(LotMovement, Lot)
        .join(Lot, Lot.id == LotMovement.lot_id)
        .where(LotMovement.entry_id == debit.id)
        .order_by(LotMovement.id.desc())
        .with_for_update(of=Lot)
    ).all()
    given = 0
    for movement, lot in rows:
        portion = min(movement.amount, lot.amount - lot.remaining, limit - given)
        if portion <= 0:
            continue
        lot.remaining += portion
        session.add(LotMovement(entry_id=entry.id, lot_id=lot.id, amount=portion))
        given += portion
        if given == limit:
            break
    session.flush()
    return given


def debit(
    session: Session,
    account: Account,
    amount: int,
    ref: Ref,
    *,
    allow_debt: bool = False,
    prefer_order_id: str | None = None,
    forgiven: int = 0,
) -> Entry:
    """Debit ``amount`` from the available balance; dust draws lots soonest-expiring first.
    A clawback (``prefer_order_id``: the order whose earned dust it takes back) draws that
    order's lots first, its pending ones before the others, and may draw other pending
    lots last; any other debit draws only lots that are not pending.

    Raises :class:`InsufficientFunds` unless ``allow_debt`` (dust clawback, debt policy).
    """
    available = account.balance - account.held - account.pending
    if amount > available and not (allow_debt and account.kind == DUST):
        raise InsufficientFunds(max(available, 0), amount)
    to_draw = min(amount, max(account.balance, 0))
    entry = _write(session, account, "debit", amount, ref, forgiven=forgiven)
    if account.kind == DUST and to_draw:
        _draw_lots(session, account, entry, to_draw, prefer_order_id)
    return entry


def _draw_lots(
    session: Session, account: Account, entry: Entry, amount: int, prefer_order_id: str | None
) -> None:
    never = case((Lot.expires_at.is_(None), 1), else_=0)
    order_by = [never, Lot.expires_at, Lot.id]
    where = [Lot.account_id == account.id, Lot.remaining > 0]
    if prefer_order_id is not None:
        # Only with a real order id: ``order_id == None`` would compile to IS NULL and
        # put every lot without an order (admin credits) ahead of soon-expiring ones.
        pending = Lot.pending_until.is_not(None)
        own = Lot.order_id == prefer_order_id
        order_by.insert(0, case((and_(own, pending), 0), (own, 1), (~pending, 2), else_=3))
    else:
        where.append(Lot.pending_until.is_(None))
    lots = session.scalars(select(Lot).where(*where).order_by(*order_by).with_for_update())
    left = amount
    for lot in lots:
        take = min(lot.remaining, left)
        lot.remaining -= take
        if lot.pending_until is not None:
            account.pending -= take
        session.add(LotMovement(entry_id=entry.id, lot_id=lot.id, amount=take))
        left -= take
        if not left:
            break
    if left:
        # I4 says the lots always cover a non-negative balance; if not, stop the transaction.
        raise AssertionError(f"account {account.id}: lots short by {left} for entry {entry.id}")
    session.flush()
