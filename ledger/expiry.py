"""Lot expiry, set-based: the bulk sibling of :func:`dust.ledger.journal.debit`.

``journal`` writes entries one posting at a time; expiry writes one ``expiry`` debit per due
account for a whole chunk of accounts in a handful of statements, whatever the chunk's size.
"One place writes entries" stays true in spirit: the ledger package writes them, with the
same invariants, and nothing outside it does.

For each dust account with due lots (``remaining > 0 AND expires_at <= as_of``)::

    expired = min(Σ remaining of its due lots, max(0, balance − held − pending))

Held dust does not expire while held: when the hold is released, the next run (a later
``as_of``) takes it. The amount is drawn from the due lots soonest-expiring first (window
``SUM(remaining) OVER (PARTITION BY account_id ORDER BY expires_at, id)``), each draw recorded
in ``dust_lot_movements``, exactly as a debit would draw them.

Invariants kept: I1 (balance == Σ entries: the entry and the new balance are written from
the same value), I3 (available never goes below zero: at most ``balance − held`` expires),
I4 (Σ lots.remaining == max(balance, 0): the lots lose exactly the entry's amount).

Pending dust (``DUST_PENDING_DAYS``) is released first, in the same chunk: lots whose
``pending_until`` is due lose it and their accounts' ``pending`` drops by their remaining
(I6: ``pending`` == Σ remaining of pending lots). A lot still pending never expires; it
expires on the first run after its release.

Idempotent: the entry's key is ``expiry:{account_id}:{as_of}``; an account that already has
it is skipped, and a second run for the same instant finds nothing left to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    String,
    and_,
    any_,
    bindparam,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased

from dust.models import Account, Entry, Hold, Lot, LotMovement
from dust.models.base import UTCDateTime, utcnow
from dust.models.tables import DUST

A = Account.__table__
E = Entry.__table__
L = Lot.__table__
M = LotMovement.__table__


@dataclass(frozen=True)
class Chunk:
    """What one chunk of a set-based job did; ``last_account_id`` is where the next starts
    (None: nothing was due after the cursor)."""

    accounts: int = 0
    entries: int = 0
    lots: int = 0
    amount: int = 0
    last_account_id: int | None = None
    #: Pending dust made available (lot job only).
    released: int = 0

    def as_counts(self) -> dict[str, int]:
        counts = {
            "accounts": self.accounts,
            "entries": self.entries,
            "lots": self.lots,
            "amount": self.amount,
        }
        if self.released:
            counts["released"] = self.released
        return counts


def idempotency_key(account_id: int, as_of: datetime) -> str:
    return f"expiry:{account_id}:{as_of.isoformat()}"


def among(session: Session, column: Any, ids: list[int]) -> Any:
    """``column IN ids`` as one parameter, whatever the number of ids: ``= ANY(array)`` on
    PostgreSQL, ``IN (SELECT value FROM json_each(...))`` on SQLite. Thousands of separate
    bind parameters cost more to send and plan than the statement costs to run."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(ids), type_=ARRAY(BigInteger)))
    values = func.json_each(json.dumps(list(ids))).table_valued("value")
    return column.in_(select(values.c.value))


def lock_due_accounts(
    session: Session, due: Any, owner: Any, after_id: int, limit: int | None
) -> list[int]:
    """Lock (in id order) the first ``limit`` accounts after ``after_id`` that own a row
    matching ``due``; ``owner`` is that row's account-id column."""
    candidates = select(owner).where(due, owner > after_id).distinct().order_by(owner)
    if limit is not None:
        candidates = candidates.limit(limit)
    stmt = select(A.c.id).where(A.c.id.in_(candidates)).order_by(A.c.id).with_for_update()
    return list(session.scalars(stmt))


def forget_cached_rows(session: Session) -> None:
    """Set-based statements bypass the ORM: reload accounts, holds and lots on next use."""
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Account | Hold | Lot):
            session.expire(obj)


def expire_lots(
    session: Session,
    as_of: datetime,
    *,
    after_id: int = 0,
    limit: int | None = None,
    reference_id: str = "manual",
) -> Chunk:
    """Expire the due lots of the first ``limit`` dust accounts (all when None) with an id
    above ``after_id``. One transaction: the caller commits."""
    session.flush()
    due = and_(
        L.c.remaining > 0,
        L.c.expires_at.is_not(None),
        L.c.expires_at <= as_of,
        L.c.pending_until.is_(None),
    )
    release = and_(L.c.pending_until.is_not(None), L.c.pending_until <= as_of)
    ids = lock_due_accounts(session, or_(due, release), L.c.account_id, after_id, limit)
    if not ids:
        return Chunk()
    released = release_pending(session, as_of, ids)
    iso = as_of.isoformat()
    # ``among`` decides; the id range lets the planner read only this chunk's index range.
    lots_of_chunk = and_(
        due, L.c.account_id.between(ids[0], ids[-1]), among(session, L.c.account_id, ids)
    )

    # 1. One expiry debit per account that has anything to give.
    due_sums = (
        select(L.c.account_id, func.sum(L.c.remaining).label("due"))
        .where(lots_of_chunk)
        .group_by(L.c.account_id)
        .subquery()
    )
    free = A.c.balance - A.c.held - A.c.pending
    available = case((free > 0, free), else_=literal(0))
    take = case((due_sums.c.due < available, due_sums.c.due), else_=available)
    key = literal("expiry:") + cast(A.c.id, String) + literal(f":{iso}")
    already = aliased(Entry)
    source = (
        select(
            A.c.id,
            literal("debit"),
            take,
            A.c.balance - take,
            literal("expiry"),
            literal("job"),
            literal(reference_id),
            key,
            literal(f"lots due by {iso}"),
            literal(0),
            literal(utcnow(), UTCDateTime()),
        )
        .join(due_sums, due_sums.c.account_id == A.c.id)
        .where(
            A.c.id.between(ids[0], ids[-1]),
            A.c.kind == DUST,
            take > 0,
            ~exists().where(already.idempotency_key == key),
        )
    )
    columns = [
        "account_id",
        "direction",
        "amount",
        "balance_after",
        "reason",
        "reference_type",
        "reference_id",
        "idempotency_key",
        "memo",
        "forgiven",
        "created_at",
    ]
    written = session.execute(
        insert(E).from_select(columns, source).returning(E.c.id, E.c.amount)
    ).all()
    if not written:
        if released:
            forget_cached_rows(session)
        return Chunk(accounts=len(ids), last_account_id=ids[-1], released=released)
    entry_ids = [entry_id for entry_id, _ in written]

    # 2. Each entry draws its account's due lots, soonest-expiring first.
    ranked = (
        select(
            L.c.id.label("lot_id"),
            L.c.account_id,
            L.c.remaining,
            func.sum(L.c.remaining)
            .over(
                partition_by=L.c.account_id,
                order_by=(L.c.expires_at, L.c.id),
                rows=(None, 0),
            )
            .label("through"),
        )
        .where(lots_of_chunk)
        .subquery()
    )
    new = (
        select(E.c.id, E.c.account_id, E.c.amount)
        .where(among(session, E.c.id, entry_ids))
        .subquery()
    )
    before = ranked.c.through - ranked.c.remaining
    portion = case(
        (ranked.c.through <= new.c.amount, ranked.c.remaining), else_=new.c.amount - before
    )
    draws = select(new.c.id, ranked.c.lot_id, portion).join(
        new, new.c.account_id == ranked.c.account_id
    )
    drawn = session.execute(
        insert(M).from_select(["entry_id", "lot_id", "amount"], draws.where(before < new.c.amount)),
        execution_options={"preserve_rowcount": True},
    ).rowcount

    # 3. Lots lose what was drawn (one draw per lot: one entry per account); accounts take
    #    the balance their entry ends at.
    draw = select(M.c.lot_id, M.c.amount).where(among(session, M.c.entry_id, entry_ids)).subquery()
    session.execute(
        update(L).where(L.c.id == draw.c.lot_id).values(remaining=L.c.remaining - draw.c.amount)
    )
    ending = (
        select(E.c.account_id, E.c.balance_after)
        .where(among(session, E.c.id, entry_ids))
        .subquery()
    )
    session.execute(
        update(A)
        .where(A.c.id == ending.c.account_id, A.c.id.between(ids[0], ids[-1]))
        .values(balance=ending.c.balance_after)
    )
    forget_cached_rows(session)
    return Chunk(
        accounts=len(ids),
        entries=len(written),
        lots=drawn,
        amount=sum(amount for _, amount in written),
        last_account_id=ids[-1],
        released=released,
    )


def release_pending(session: Session, as_of: datetime, ids: list[int]) -> int:
    """Make the pending dust due by ``as_of`` of the locked accounts ``ids`` available:
    their due lots stop being pending, their ``pending`` drops by those lots' remaining.
    Returns the dust released."""
    due = and_(
        L.c.pending_until.is_not(None),
        L.c.pending_until <= as_of,
        L.c.account_id.between(ids[0], ids[-1]),
        among(session, L.c.account_id, ids),
    )
    sums = session.execute(
        select(L.c.account_id, func.sum(L.c.remaining)).where(due).group_by(L.c.account_id)
    ).all()
    if not sums:
        return 0
    session.execute(update(L).where(due).values(pending_until=None))
    by_account = (
        select(L.c.account_id, func.sum(L.c.remaining).label("still"))
        .where(
            L.c.pending_until.is_not(None),
            among(session, L.c.account_id, [a for a, _ in sums]),
        )
        .group_by(L.c.account_id)
        .subquery()
    )
    still = (
        select(func.coalesce(func.max(by_account.c.still), 0))
        .where(by_account.c.account_id == A.c.id)
        .scalar_subquery()
    )
    # pending == Σ remaining of the lots still pending (I6), written from that very sum.
    session.execute(
        update(A).where(among(session, A.c.id, [a for a, _ in sums])).values(pending=still)
    )
    return sum(int(total) for _, total in sums)
