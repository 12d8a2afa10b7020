"""Reconciliation: the ledger checked against itself, set-based (one query per check).

Each check returns discrepancies as dicts ``{"check", "account_id", "expected", "actual"}``
(plus the ids that identify the row: ``entry_id``, ``hold_id``, ``order_id``, ``event_id``).
``ok`` is false when the ledger disagrees with itself or when events are ``failed`` /
``needs_attention`` (work left undone, docs/CONTRACT.md §6.2).

The per-account checks take an account-id range (``lo``..``hi``, inclusive; None = open),
so a scheduled run can split a large ledger into chunks that each finish far inside the
visibility timeout; :func:`reconcile` runs them all at once over the whole ledger.
:func:`check_accounts` runs them over a range in one statement (the journal read once; see
:func:`_per_account`); the functions of the single checks give the same results one query
each (tests compare the two).

The checks:

* ``balance``        cached ``balance`` == Σ credits − Σ debits of the account's entries
* ``journal_chain``  each entry's ``balance_after`` == the previous entry's ± its amount (the
                     first: ± its amount) — finds a deleted or altered entry even when the
                     cached balance was "fixed" to match
* ``held``           cached ``held`` == Σ active holds
* ``lots``           Σ lots.remaining == max(dust balance, 0)
* ``lot_remaining``  no lot's ``remaining`` below zero (a CHECK refuses it too; the lots
                     check of a range sums only open lots, found by their index)
* ``available``      balance − held >= 0 (except a dust account in debt from a clawback)
* ``stale_hold``     no hold still active past its expiry (after ``grace_seconds``, the
                     time the hold-expiry job may take to come round)
* ``pending``        cached ``pending`` == Σ remaining of the account's pending lots, and
                     pending <= max(balance, 0)
* ``pending_overdue`` no lot still pending past its date once the lot job ran for that
                     date (``lot_run``: the last such run's instant, and when it started:
                     lots made after it started are not its to release)
* ``order_not_earned`` every placed order earned dust or recorded why not
* ``event``          events ``failed`` or ``needs_attention``

Every run is stored in ``dust_reconciliations`` (:func:`open_record` …
:func:`close_record`). :func:`repair_caches` rebuilds the cached ``balance`` and ``held``
of accounts from the journal and the holds — it never touches an entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select, text, update
from sqlalchemy.orm import Session

from dust.ledger.expiry import among, forget_cached_rows
from dust.models import Account, Entry, Event, EventConflict, Hold, Lot, Order, Reconciliation
from dust.models.base import utcnow

SIGNED = case((Entry.direction == "credit", Entry.amount), else_=-Entry.amount)
#: A stored reconciliation keeps this many discrepancies (the count is always complete).
STORED_DISCREPANCIES = 1000
#: The per-account checks, in the order :func:`check_accounts` lists their discrepancies.
PER_ACCOUNT_CHECKS = ("balance", "journal_chain", "held", "lots", "available", "stale_hold")
#: Checks whose discrepancies ``--repair`` can fix (caches rebuilt from the journal).
REPAIRABLE = ("balance", "held")


def _in_range(column: Any, lo: int | None, hi: int | None) -> list[Any]:
    conditions = []
    if lo is not None:
        conditions.append(column >= lo)
    if hi is not None:
        conditions.append(column <= hi)
    return conditions


def _journal_totals(lo: int | None = None, hi: int | None = None) -> Any:
    return (
        select(Entry.account_id, func.sum(SIGNED).label("total"))
        .where(*_in_range(Entry.account_id, lo, hi))
        .group_by(Entry.account_id)
        .subquery()
    )


def _active_holds(lo: int | None = None, hi: int | None = None) -> Any:
    return (
        select(Hold.account_id, func.sum(Hold.amount).label("total"))
        .where(Hold.status == "active", *_in_range(Hold.account_id, lo, hi))
        .group_by(Hold.account_id)
        .subquery()
    )


def check_balances(
    session: Session, lo: int | None = None, hi: int | None = None
) -> list[dict[str, Any]]:
    """Cached ``balance`` == Σ credits − Σ debits, for every account."""
    totals = _journal_totals(lo, hi)
    journal = func.coalesce(totals.c.total, 0)
    rows = session.execute(
        select(Account.id, Account.balance, journal)
        .outerjoin(totals, totals.c.account_id == Account.id)
        .where(Account.balance != journal, *_in_range(Account.id, lo, hi))
        .order_by(Account.id)
    )
    return [
        {"check": "balance", "account_id": a, "expected": int(j), "actual": b} for a, b, j in rows
    ]


def check_journal_chain(
    session: Session,
    lo: int | None = None,
    hi: int | None = None,
    accounts: list[int] | None = None,
) -> list[dict[str, Any]]:
    """Each entry's ``balance_after`` follows from the previous entry of its account
    (of the accounts ``lo``..``hi``, or only those in ``accounts`` when given)."""
    where = _in_range(Entry.account_id, lo, hi)
    if accounts is not None:
        where.append(among(session, Entry.account_id, accounts))
    chain = (
        select(
            Entry.id,
            Entry.account_id,
            Entry.balance_after,
            SIGNED.label("signed"),
            func.lag(Entry.balance_after)
            .over(partition_by=Entry.account_id, order_by=Entry.id)
            .label("previous"),
        )
        .where(*where)
        .subquery()
    )
    expected = func.coalesce(chain.c.previous, 0) + chain.c.signed
    rows = session.execute(
        select(chain.c.account_id, chain.c.id, expected, chain.c.balance_after)
        .where(chain.c.balance_after != expected)
        .order_by(chain.c.account_id, chain.c.id)
    )
    return [
        {
            "check": "journal_chain",
            "account_id": a,
            "entry_id": e,
            "expected": int(x),
            "actual": int(b),
        }
        for a, e, x, b in rows
    ]


def check_held(
    session: Session, lo: int | None = None, hi: int | None = None
) -> list[dict[str, Any]]:
    """Cached ``held`` == Σ active holds."""
    active = _active_holds(lo, hi)
    expected = func.coalesce(active.c.total, 0)
    rows = session.execute(
        select(Account.id, Account.held, expected)
        .outerjoin(active, active.c.account_id == Account.id)
        .where(Account.held != expected, *_in_range(Account.id, lo, hi))
        .order_by(Account.id)
    )
    return [{"check": "held", "account_id": a, "expected": int(e), "actual": h} for a, h, e in rows]


def check_lots(
    session: Session, lo: int | None = None, hi: int | None = None
) -> list[dict[str, Any]]:
    """Σ lots.remaining == max(dust balance, 0) for every dust account."""
    lots = (
        select(Lot.account_id, func.sum(Lot.remaining).label("total"))
        .where(*_in_range(Lot.account_id, lo, hi))
        .group_by(Lot.account_id)
        .subquery()
    )
    remaining = func.coalesce(lots.c.total, 0)
    expected = case((Account.balance > 0, Account.balance), else_=literal(0))
    rows = session.execute(
        select(Account.id, expected, remaining)
        .outerjoin(lots, lots.c.account_id == Account.id)
        .where(Account.kind == "dust", remaining != expected, *_in_range(Account.id, lo, hi))
        .order_by(Account.id)
    )
    return [
        {"check": "lots", "account_id": a, "expected": int(e), "actual": int(r)} for a, e, r in rows
    ]


def check_available(
    session: Session, lo: int | None = None, hi: int | None = None
) -> list[dict[str, Any]]:
    """No negative available balance, except a dust account in debt from a clawback."""
    rows = session.execute(
        select(Account.id, Account.balance, Account.held)
        .where(
            Account.balance < Account.held,
            or_(Account.kind == "store_credit", Account.balance >= 0),
            *_in_range(Account.id, lo, hi),
        )
        .order_by(Account.id)
    )
    return [
        {"check": "available", "account_id": a, "expected": ">= 0", "actual": b - h}
        for a, b, h in rows
    ]


def check_stale_holds(
    session: Session,
    as_of: datetime,
    lo: int | None = None,
    hi: int | None = None,
    grace_seconds: int = 0,
) -> list[dict[str, Any]]:
    """No hold left active past its expiry (by more than ``grace_seconds``)."""
    cutoff = as_of - timedelta(seconds=grace_seconds)
    rows = session.execute(
        select(Hold.id, Hold.account_id, Hold.amount, Hold.expires_at)
        .where(
            Hold.status == "active",
            Hold.expires_at < cutoff,
            *_in_range(Hold.account_id, lo, hi),
        )
        .order_by(Hold.account_id, Hold.id)
    )
    return [
        {
            "check": "stale_hold",
            "account_id": a,
            "hold_id": h,
            "amount": amount,
            "expires_at": e.isoformat(),
            "expected": "expired",
            "actual": "active",
        }
        for h, a, amount, e in rows
    ]


def check_orders(session: Session) -> list[dict[str, Any]]:
    """Every placed order either earned dust or recorded why not."""
    rows = session.execute(
        select(Order.order_id, Order.customer_id)
        .where(
            Order.placed_event_id.is_not(None),
            and_(Order.earned == 0, Order.no_earn_reason.is_(None)),
        )
        .order_by(Order.order_id)
    )
    return [
        {
            "check": "order_not_earned",
            "order_id": o,
            "customer_id": c,
            "expected": "earned, or a reason why not",
            "actual": "neither",
        }
        for o, c in rows
    ]


def check_events(session: Session) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Count events by status; ``failed`` and ``needs_attention`` are work left undone.
    Envelopes refused as ``conflict`` (an id used by other content) are counted under
    that status, as ``rejected`` and ``ignored`` are: not discrepancies."""
    counts = {
        status: int(n)
        for status, n in session.execute(select(Event.status, func.count()).group_by(Event.status))
    }
    counts["conflict"] = int(session.scalar(select(func.count()).select_from(EventConflict)) or 0)
    undone = session.execute(
        select(Event.event_id, Event.status, Event.reason)
        .where(Event.status.in_(["failed", "needs_attention"]))
        .order_by(Event.received_at, Event.event_id)
    )
    return counts, [
        {
            "check": "event",
            "event_id": e,
            "status": s,
            "reason": r,
            "expected": "processed",
            "actual": s,
        }
        for e, s, r in undone
    ]


#: Memory for the sorts and hashes of one chunk (PostgreSQL, this transaction only). The
#: chain check orders each account's entries by id: 250 000 entries (25 000 accounts of
#: ten) sort in ~25 MB of memory, where the default ``work_mem`` (4 MB) spills them to
#: disk; the job's chunk of 100 000 such accounts spills part of its ~100 MB sort.
CHUNK_WORK_MEM = "64MB"


def _per_account(lo: int | None, hi: int | None) -> Any:
    """One statement for every per-account check but stale holds, over accounts
    ``lo``..``hi``: the journal read once (Σ entries and the chain's breaks per account,
    from one sort by account and id), active holds and open lots summed per account, the
    account row compared with all of them. It returns the accounts where something
    disagrees, plus the row of the range's first account with entries (``journal_account``
    = ``first_account``), which carries the range's ``range_entries`` and ``range_breaks``
    (entries of the range whatever their account)."""
    A, E, H, L = (Account.__table__, Entry.__table__, Hold.__table__, Lot.__table__)
    signed = case((E.c.direction == "credit", E.c.amount), else_=-E.c.amount)
    chain = (
        select(
            E.c.account_id,
            signed.label("signed"),
            E.c.balance_after,
            func.lag(E.c.balance_after)
            .over(partition_by=E.c.account_id, order_by=E.c.id)
            .label("previous"),
        )
        .where(*_in_range(E.c.account_id, lo, hi))
        .subquery("chain")
    )
    broken = case(
        (chain.c.balance_after != func.coalesce(chain.c.previous, 0) + chain.c.signed, 1),
        else_=0,
    )
    journal = (
        select(
            chain.c.account_id,
            func.sum(chain.c.signed).label("total"),
            func.sum(broken).label("breaks"),
            func.min(chain.c.account_id).over().label("first_account"),
            func.sum(func.count()).over().label("range_entries"),
            func.sum(func.sum(broken)).over().label("range_breaks"),
        )
        .group_by(chain.c.account_id)
        .subquery("journal")
    )
    active = (
        select(H.c.account_id, func.sum(H.c.amount).label("total"))
        .where(H.c.status == "active", *_in_range(H.c.account_id, lo, hi))
        .group_by(H.c.account_id)
        .subquery("active")
    )
    # Open lots only: the partial index ix_dust_lots_open (account_id, … WHERE remaining > 0)
    # finds them by account, where all lots would take a scan of the table for every chunk.
    # The sum is the same (a lot at 0 adds nothing; below 0 is refused by a CHECK and
    # reported by check_lot_remaining).
    lots = (
        select(L.c.account_id, func.sum(L.c.remaining).label("total"))
        .where(L.c.remaining > 0, *_in_range(L.c.account_id, lo, hi))
        .group_by(L.c.account_id)
        .subquery("lots")
    )
    per = (
        select(
            A.c.id,
            A.c.kind,
            A.c.balance,
            A.c.held,
            func.coalesce(journal.c.total, 0).label("journal"),
            func.coalesce(journal.c.breaks, 0).label("breaks"),
            func.coalesce(active.c.total, 0).label("active"),
            func.coalesce(lots.c.total, 0).label("lots"),
            journal.c.account_id.label("journal_account"),
            journal.c.first_account,
            journal.c.range_entries,
            journal.c.range_breaks,
        )
        .select_from(
            A.outerjoin(journal, journal.c.account_id == A.c.id)
            .outerjoin(active, active.c.account_id == A.c.id)
            .outerjoin(lots, lots.c.account_id == A.c.id)
        )
        .where(*_in_range(A.c.id, lo, hi))
        .subquery("per_account")
    )
    positive = case((per.c.balance > 0, per.c.balance), else_=literal(0))
    wrong = or_(
        per.c.balance != per.c.journal,
        per.c.breaks > 0,
        per.c.held != per.c.active,
        and_(per.c.kind == "dust", per.c.lots != positive),
        and_(per.c.balance < per.c.held, or_(per.c.kind == "store_credit", per.c.balance >= 0)),
    )
    carrier = per.c.journal_account == per.c.first_account
    return select(per).where(or_(wrong, carrier)).order_by(per.c.id)


def check_accounts(
    session: Session,
    as_of: datetime,
    lo: int | None = None,
    hi: int | None = None,
    grace_seconds: int = 0,
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Every per-account check over accounts ``lo``..``hi``: (counts, discrepancies).

    The same discrepancies, in the same order, as ``check_balances``, ``check_journal_chain``,
    ``check_held``, ``check_lots``, ``check_available`` and ``check_stale_holds`` one after
    the other, from one pass over the range's entries instead of two (see
    :func:`_per_account`); the chain's breaks are listed entry by entry only for the
    accounts that have some."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SET LOCAL work_mem = '{CHUNK_WORK_MEM}'"))
        # A chunk's statement costs more than jit_above_cost on a large ledger, and compiling
        # it costs more than it saves on a chunk's rows (BENCHMARKS.md).
        session.execute(text("SET LOCAL jit = off"))
    balance: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    lots: list[dict[str, Any]] = []
    available: list[dict[str, Any]] = []
    broken: dict[int, int] = {}
    entries = breaks = 0
    carried = False
    for row in session.execute(_per_account(lo, hi)):
        if row.journal_account is not None and row.journal_account == row.first_account:
            carried = True
            entries, breaks = int(row.range_entries), int(row.range_breaks)
        journal, active, remaining = int(row.journal), int(row.active), int(row.lots)
        if row.balance != journal:
            balance.append(
                {
                    "check": "balance",
                    "account_id": row.id,
                    "expected": journal,
                    "actual": row.balance,
                }
            )
        if row.breaks:
            broken[row.id] = int(row.breaks)
        if row.held != active:
            held.append(
                {"check": "held", "account_id": row.id, "expected": active, "actual": row.held}
            )
        positive = max(row.balance, 0)
        if row.kind == "dust" and remaining != positive:
            lots.append(
                {"check": "lots", "account_id": row.id, "expected": positive, "actual": remaining}
            )
        if row.balance < row.held and (row.kind == "store_credit" or row.balance >= 0):
            available.append(
                {
                    "check": "available",
                    "account_id": row.id,
                    "expected": ">= 0",
                    "actual": row.balance - row.held,
                }
            )
    chain: list[dict[str, Any]] = []
    if not carried:
        # The range's first entries belong to no account (or there are none): count the
        # range's entries and check their chain directly.
        entries = _count(session, Entry, Entry.account_id, lo, hi)
        if entries:
            chain = check_journal_chain(session, lo, hi)
    elif breaks:
        # Only a tampered journal gets here: list each break. When every break is in an
        # account of the range, read only those accounts' entries again.
        if sum(broken.values()) == breaks:
            chain = check_journal_chain(session, lo, hi, accounts=sorted(broken))
        else:
            chain = check_journal_chain(session, lo, hi)
    stale = check_stale_holds(session, as_of, lo, hi, grace_seconds)
    counts = {
        "accounts": _count(session, Account, Account.id, lo, hi),
        "entries": entries,
        "holds": _count(session, Hold, Hold.account_id, lo, hi),
    }
    return counts, [*balance, *chain, *held, *lots, *available, *stale]


def _count(session: Session, model: Any, column: Any, lo: int | None, hi: int | None) -> int:
    stmt = select(func.count()).select_from(model).where(*_in_range(column, lo, hi))
    return int(session.scalar(stmt) or 0)


def check_lot_remaining(session: Session) -> tuple[int, list[dict[str, Any]]]:
    """Count every lot, and report a lot whose ``remaining`` is below zero (a CHECK refuses
    it; the per-account ``lots`` check sums only open lots, so this is where one would
    show). One scan of the lots table per reconciliation."""
    negative = case((Lot.remaining < 0, 1), else_=0)
    total, below = session.execute(select(func.count(), func.sum(negative))).one()
    found: list[dict[str, Any]] = []
    if below:
        rows = session.execute(
            select(Lot.id, Lot.account_id, Lot.remaining)
            .where(Lot.remaining < 0)
            .order_by(Lot.account_id, Lot.id)
        )
        found = [
            {
                "check": "lot_remaining",
                "account_id": a,
                "lot_id": lot,
                "expected": ">= 0",
                "actual": int(r),
            }
            for lot, a, r in rows
        ]
    return int(total or 0), found


def check_pending(
    session: Session, lot_run: tuple[datetime, datetime] | None = None
) -> list[dict[str, Any]]:
    """Pending dust: the cached ``pending`` of every account that has some, or pending
    lots, equals Σ remaining of its pending lots and is at most ``max(balance, 0)``; and,
    when a lot run ``(as_of, started_at)`` succeeded, no lot made before it started is
    still pending past ``as_of``. Reads only accounts with pending dust and pending lots
    (partial index)."""
    lots = (
        select(Lot.account_id, func.sum(Lot.remaining).label("total"))
        .where(Lot.pending_until.is_not(None))
        .group_by(Lot.account_id)
        .subquery()
    )
    concerned = select(Account.id).where(Account.pending != 0).union(select(lots.c.account_id))
    in_lots = func.coalesce(lots.c.total, 0)
    positive = case((Account.balance > 0, Account.balance), else_=literal(0))
    rows = session.execute(
        select(Account.id, Account.pending, in_lots, positive)
        .outerjoin(lots, lots.c.account_id == Account.id)
        .where(
            Account.id.in_(concerned),
            or_(Account.pending != in_lots, Account.pending > positive),
        )
        .order_by(Account.id)
    )
    found: list[dict[str, Any]] = []
    for account_id, pending, total, balance in rows:
        expected = min(int(total), int(balance))
        found.append(
            {
                "check": "pending",
                "account_id": account_id,
                "expected": int(total) if int(total) <= int(balance) else f"<= {expected}",
                "actual": int(pending),
            }
        )
    if lot_run is not None:
        as_of, started_at = lot_run
        overdue = session.execute(
            select(Lot.id, Lot.account_id, Lot.remaining, Lot.pending_until)
            .where(
                Lot.pending_until.is_not(None),
                Lot.pending_until <= as_of,
                Lot.created_at < started_at,
            )
            .order_by(Lot.account_id, Lot.id)
        )
        found += [
            {
                "check": "pending_overdue",
                "account_id": a,
                "lot_id": lot,
                "pending_until": until.isoformat(),
                "expected": "released",
                "actual": f"{int(r)} pending",
            }
            for lot, a, r, until in overdue
        ]
    return found


def check_rest(
    session: Session, lot_run: tuple[datetime, datetime] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The checks that are not per account: lots below zero, pending dust (see
    :func:`check_pending`), orders and events."""
    lot_count, negative_lots = check_lot_remaining(session)
    pending = check_pending(session, lot_run)
    event_counts, undone = check_events(session)
    checked = {
        "lots": lot_count,
        "orders": int(session.scalar(select(func.count()).select_from(Order)) or 0),
        "events": event_counts,
    }
    return checked, [*negative_lots, *pending, *check_orders(session), *undone]


def reconcile(
    session: Session,
    as_of: datetime | None = None,
    grace_seconds: int = 0,
    lot_run: tuple[datetime, datetime] | None = None,
) -> dict[str, Any]:
    """Run every check over the whole ledger at once; the JSON of ``dust reconcile --json``."""
    as_of = as_of or utcnow()
    checked, discrepancies = check_accounts(session, as_of, grace_seconds=grace_seconds)
    rest, more = check_rest(session, lot_run)
    return {
        "ok": not discrepancies and not more,
        "as_of": as_of.isoformat(),
        "checked": {**checked, **rest},
        "discrepancies": discrepancies + more,
    }


# -- stored runs ---------------------------------------------------------------------------


def open_record(
    session: Session, as_of: datetime, job_run_id: int | None = None, actor: str | None = None
) -> Reconciliation:
    """Start storing a reconciliation; chunks add to it, :func:`close_record` ends it."""
    record = Reconciliation(
        job_run_id=job_run_id,
        started_at=utcnow(),
        as_of=as_of,
        ok=True,
        checked=json.dumps({"accounts": 0, "entries": 0, "holds": 0, "lots": 0}),
        discrepancy_count=0,
        discrepancies="[]",
        repaired=False,
        actor=actor,
    )
    session.add(record)
    session.flush()
    return record


def add_to_record(
    record: Reconciliation, checked: dict[str, Any], discrepancies: list[dict[str, Any]]
) -> None:
    """Add one chunk's counts and discrepancies to a stored reconciliation."""
    total = json.loads(record.checked)
    for name, value in checked.items():
        if isinstance(value, int):
            total[name] = total.get(name, 0) + value
        else:
            total[name] = value
    record.checked = json.dumps(total)
    if discrepancies:
        record.ok = False
        record.discrepancy_count += len(discrepancies)
        stored = json.loads(record.discrepancies)
        room = STORED_DISCREPANCIES - len(stored)
        if room > 0:
            record.discrepancies = json.dumps(stored + discrepancies[:room], default=str)


def close_record(record: Reconciliation) -> None:
    record.finished_at = utcnow()


def record_json(record: Reconciliation) -> dict[str, Any]:
    """A stored reconciliation as JSON (at most ``STORED_DISCREPANCIES`` listed)."""
    return {
        "id": record.id,
        "job_run_id": record.job_run_id,
        "ok": record.ok,
        "as_of": record.as_of.isoformat(),
        "started_at": record.started_at.isoformat(),
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        "checked": json.loads(record.checked),
        "discrepancy_count": record.discrepancy_count,
        "discrepancies": json.loads(record.discrepancies),
        "repaired": record.repaired,
        "repairs": json.loads(record.repairs) if record.repairs else None,
        "actor": record.actor,
    }


def latest_record(session: Session) -> Reconciliation | None:
    """The last reconciliation started (a scheduled run or ``dust reconcile``), if any."""
    return session.scalar(select(Reconciliation).order_by(Reconciliation.id.desc()).limit(1))


# -- repair ----------------------------------------------------------------------------


def repair_caches(session: Session, account_ids: Iterable[int]) -> list[dict[str, Any]]:
    """Rebuild the cached ``balance`` (Σ entries) and ``held`` (Σ active holds) of the
    accounts ``account_ids`` — set-based, under their row locks (id order) — and return
    what changed: ``[{"account_id", "column", "before", "after"}]``. Entries are never
    touched: the journal is the truth the caches are rebuilt from."""
    ids = sorted(set(account_ids))
    if not ids:
        return []
    session.flush()
    A = Account.__table__
    E = Entry.__table__
    H = Hold.__table__
    session.scalars(
        select(A.c.id).where(among(session, A.c.id, ids)).order_by(A.c.id).with_for_update()
    ).all()
    journal = (
        select(
            func.coalesce(
                func.sum(case((E.c.direction == "credit", E.c.amount), else_=-E.c.amount)), 0
            )
        )
        .where(E.c.account_id == A.c.id)
        .scalar_subquery()
    )
    active = (
        select(func.coalesce(func.sum(H.c.amount), 0))
        .where(H.c.account_id == A.c.id, H.c.status == "active")
        .scalar_subquery()
    )
    rows = session.execute(
        select(A.c.id, A.c.balance, journal, A.c.held, active)
        .where(among(session, A.c.id, ids))
        .order_by(A.c.id)
    ).all()
    changes: list[dict[str, Any]] = []
    for account_id, balance, balance_after, held, held_after in rows:
        if balance != balance_after:
            changes.append(
                {
                    "account_id": account_id,
                    "column": "balance",
                    "before": int(balance),
                    "after": int(balance_after),
                }
            )
        if held != held_after:
            changes.append(
                {
                    "account_id": account_id,
                    "column": "held",
                    "before": int(held),
                    "after": int(held_after),
                }
            )
    changed = sorted({change["account_id"] for change in changes})
    if changed:
        session.execute(update(A).where(A.c.id.in_(changed)).values(balance=journal, held=active))
        forget_cached_rows(session)
    return changes
