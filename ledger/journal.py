"""Where entries are written and balances moved: one posting at a time (``credit``,
``debit``) and many in one statement (``credit_many``, the set-based path of new orders).
The one other writer is ``ledger/expiry.py``, the set-based expiry debits of a whole chunk
of accounts, which keeps the same invariants; nothing outside these two modules writes an
entry (tests/test_layers.py checks it).

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

Inside :func:`deferred` (the runs of a batch, ``dust.inbox``) nothing here flushes: entry
and lot ids are handed out ahead (:func:`_new_id`), the lots of an account are read once
(its first ``LOT_PAGE`` in draw order, the rest only if a debit goes past them) and drawn
in memory, and what a run wrote goes to the database in the session's next flush, a few
statements for the whole run. Outside it, each posting is flushed at once.
Both draw lots in the one order :func:`draw_order` gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CompoundSelect,
    Select,
    String,
    Table,
    any_,
    bindparam,
    event,
    func,
    select,
    text,
    true,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import instance_state, set_committed_value
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from dust.ledger.accounts import DRAWS, IDS, LOCKED, LOTS, OPENED, SPENDS
from dust.ledger.errors import InsufficientFunds
from dust.models import Account, Entry, Hold, Lot, LotMovement, Order, Refund
from dust.models.base import utcnow
from dust.models.bulk import insert_rows, update_rows
from dust.models.tables import DUST

#: ``session.info`` key: the highest id handed out per table in this session's transaction
#: (SQLite: where the next block starts), kept across deferred blocks and savepoints, so
#: that no id is handed out twice, even one a rolled-back savepoint left unused.
HIGH = "dust.journal.high"
#: Ids fetched at a time (PostgreSQL: ``nextval`` of the table's sequence), the first
#: time in a deferred block; twice as many each time after, up to ``MAX_ID_BLOCK``. Ids
#: not used are gaps, as a rolled-back insert leaves.
ID_BLOCK = 64
MAX_ID_BLOCK = 1024


@dataclass
class _Ids:
    """Ids of one table handed out ahead, in increasing order, to entries (or lots) of
    the accounts that were locked when they were fetched, and of accounts this
    transaction opened (no other has seen them), and only those."""

    ids: list[int]
    accounts: frozenset[int]
    used: int = 0


@dataclass
class _Deferred:
    #: New entries, lots and draws, not in the session: written by :func:`write_new`.
    new: dict[type[Entry | Lot | LotMovement], list[Any]] = field(
        default_factory=lambda: {Entry: [], Lot: [], LotMovement: []}
    )
    blocks: dict[str, _Ids] = field(default_factory=dict)
    #: Blocks fetched per table: each is twice the one before, up to ``MAX_ID_BLOCK``.
    fetched: dict[str, int] = field(default_factory=dict)


@contextmanager
def deferred(session: Session) -> Iterator[None]:
    """Post without flushing until the block ends (see the module's docstring); the caller
    flushes (or commits). Ids are handed out ahead only to entries of accounts locked
    before they were fetched, so an account's entries still get increasing ids in the
    order they are written, across transactions too (its lock orders them)."""
    for key in (LOTS, SPENDS, DRAWS):
        session.info[key] = {}
    session.info[IDS] = _Deferred()
    try:
        yield
    finally:
        for key in (IDS, LOTS, SPENDS, DRAWS):
            session.info.pop(key, None)


def _buffer(session: Session, row: Entry | Lot | LotMovement) -> None:
    state: _Deferred = session.info[IDS]
    state.new[type(row)].append(row)


def write_new(session: Session) -> None:
    """Insert the entries, lots and draws a :func:`deferred` block posted and has not
    written yet, one statement per table (the rows as one document, ``insert_rows``):
    before any flush of the session (its rows refer to them) and any read of them. The
    lots join the session then, so that what later draws them is written as a change."""
    state: _Deferred | None = session.info.get(IDS)
    if state is None or not any(state.new.values()):
        return
    new, state.new = state.new, {model: [] for model in state.new}
    for model, rows in new.items():
        if not rows:
            continue
        table = model.__table__
        insert_rows(session, table, [_row_of(table, row) for row in rows], flush=False)
        if model is Lot:
            for lot in rows:
                make_transient_to_detached(lot)
                session.add(lot)


def _row_of(table: Table, obj: object) -> dict[str, object]:
    """The columns of a new row as its object holds them (a column's scalar default where
    the object left it unset, as the unit of work would insert it)."""
    row = {}
    for table_column in table.columns:
        value = getattr(obj, table_column.key)
        default = table_column.default
        if value is None and isinstance(default, ScalarElementColumnDefault):
            value = default.arg
        row[table_column.name] = value
    return row


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    """A flush in a deferred block (an ORM read, the block's end) writes its new entries,
    lots and draws first: the session's rows may refer to them."""
    write_new(session)


def flush_deferred(session: Session) -> None:
    """Write what a :func:`deferred` block did: its new rows (entries, lots, draws,
    refunds) in one INSERT per table (the session's flush), then the changed rows of each
    table the block changes (accounts, orders, refunds, holds, lots) in one UPDATE per
    table, of the columns changed on any of them. The unit of work would send one UPDATE
    per row wherever a row's changed columns differ from its neighbour's."""
    changed: dict[type, list[object]] = {}
    for obj in session.dirty:
        if type(obj) in CHANGED_ROWS:
            changed.setdefault(type(obj), []).append(obj)
    write_new(session)
    updates = []
    for model, objects in changed.items():
        columns = CHANGED_ROWS[model]
        names = sorted({n for o in objects for n in instance_state(o).committed_state} & columns)
        if not names:
            continue
        key = model.__table__.primary_key.columns[0].name  # type: ignore[attr-defined]
        rows = [{key: getattr(o, key)} | {n: getattr(o, n) for n in names} for o in objects]
        for obj in objects:  # written below: nothing left for the unit of work
            for name in names:
                set_committed_value(obj, name, getattr(obj, name))
        updates.append((model.__table__, rows, key))  # type: ignore[attr-defined]
    session.flush()
    for table, rows, key in updates:
        update_rows(session, table, rows, key=key)


#: The tables whose changed rows :func:`flush_deferred` writes itself, and the columns.
CHANGED_ROWS: dict[type, frozenset[str]] = {
    model: frozenset(c.name for c in model.__table__.columns if not c.primary_key)
    for model in (Account, Order, Refund, Hold, Lot)
}


def forget_ids(session: Session) -> None:
    """Drop the ids handed out ahead and not used: entries were inserted that took their
    ids from the sequence (``credit_many``), so later ones must take newer ids."""
    state: _Deferred | None = session.info.get(IDS)
    if state is not None:
        state.blocks.clear()


def _new_id(session: Session, table: Table, account_id: int | None) -> int | None:
    """The id of a new row of ``table`` (entries, lots) of the locked ``account_id``, or
    of a lot draw (``account_id`` None: no order among them matters across transactions),
    when :func:`deferred`; None otherwise (the INSERT gives it)."""
    state: _Deferred | None = session.info.get(IDS)
    if state is None:
        return None
    block = state.blocks.get(table.name)
    # Good for a draw; for an account locked when it was fetched, or opened by this
    # transaction (no other has seen it).
    good = account_id is None or account_id in session.info.get(OPENED, ())
    if block is None or block.used == len(block.ids) or not (good or account_id in block.accounts):
        locked = frozenset(session.info.get(LOCKED, {}))
        block = state.blocks[table.name] = _Ids(_fetch_ids(session, table, state), locked)
    new = block.ids[block.used]
    block.used += 1
    session.info.setdefault(HIGH, {})[table.name] = new
    return new


def _fetch_ids(session: Session, table: Table, state: _Deferred) -> list[int]:
    fetched = state.fetched.get(table.name, 0)
    state.fetched[table.name] = fetched + 1
    size = min(MAX_ID_BLOCK, ID_BLOCK << fetched)
    # On the session's connection: the session's unit of work is not flushed first.
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        stmt = text(
            "SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)"
        ).bindparams(bindparam("table", table.name), bindparam("n", size))
        return sorted(connection.execute(stmt).scalars())
    # SQLite: one writer at a time (BEGIN IMMEDIATE), so the ids above the largest in
    # the table (or handed out) are free until this transaction ends.
    top = connection.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar() or 0
    start = max(top, session.info.get(HIGH, {}).get(table.name, 0)) + 1
    return list(range(start, start + size))


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
    entry_id = _new_id(session, Entry.__table__, account.id)
    if entry_id is None:
        session.add(entry)
        session.flush()
    else:
        entry.id = entry_id
        _buffer(session, entry)
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
        lot = Lot(
            account_id=account.id,
            entry_id=entry.id,
            amount=to_lots,
            remaining=to_lots,
            expires_at=expires_at,
            order_id=order_id,
            created_at=utcnow(),
            pending_until=pending_until,
        )
        lot_id = _new_id(session, Lot.__table__, account.id)
        if pending_until is not None:
            account.pending += to_lots
        if lot_id is None:
            session.add(lot)
            session.flush()
        else:
            lot.id = lot_id
            _buffer(session, lot)
            _keep_lots(session, account.id, [lot])
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
    forget_ids(session)  # these entries take their ids from the sequence, now
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


def load_draws(session: Session, entry_ids: Iterable[int]) -> None:
    """Read (and lock the lots of) the lot draws of the debits ``entry_ids`` in one
    statement, for :func:`credit`'s ``give_back`` in a :func:`deferred` block."""
    known: dict[int, list[tuple[LotMovement, Lot]]] | None = session.info.get(DRAWS)
    if known is None:
        return
    wanted = sorted(set(entry_ids) - set(known))
    if not wanted:
        return
    for entry_id in wanted:
        known[entry_id] = []
    for movement, lot in _draws(session, wanted):
        known[movement.entry_id].append((movement, lot))


def _draws(session: Session, entry_ids: list[int]) -> list[tuple[LotMovement, Lot]]:
    """The lot draws of debits, newest first, their lots locked."""
    write_new(session)  # the session may be clean: no flush would write them
    rows = session.execute(
        select(LotMovement, Lot)
        .join(Lot, Lot.id == LotMovement.lot_id)
        .where(LotMovement.entry_id.in_(entry_ids))
        .order_by(LotMovement.id.desc())
        .with_for_update(of=Lot)
    ).all()
    return [(movement, lot) for movement, lot in rows]


def _give_back(session: Session, entry: Entry, debit: Entry, limit: int) -> int:
    """Return up to ``limit`` to the lots ``debit`` drew from (latest-expiring first)."""
    known: dict[int, list[tuple[LotMovement, Lot]]] | None = session.info.get(DRAWS)
    if known is not None and debit.id in known:
        rows = known[debit.id]
    else:
        rows = _draws(session, [debit.id])
    given = 0
    for movement, lot in rows:
        portion = min(movement.amount, lot.amount - lot.remaining, limit - given)
        if portion <= 0:
            continue
        lot.remaining += portion
        _keep_lots(session, lot.account_id, [lot])
        _add_movement(session, entry, lot, portion)
        given += portion
        if given == limit:
            break
    if IDS not in session.info:
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


def _add_movement(session: Session, entry: Entry, lot: Lot, amount: int) -> None:
    movement = LotMovement(entry_id=entry.id, lot_id=lot.id, amount=amount)
    movement_id = _new_id(session, LotMovement.__table__, None)
    if movement_id is None:
        session.add(movement)
    else:
        movement.id = movement_id
        _buffer(session, movement)


def draw_order(prefer_order_id: str | None) -> Callable[[Lot], tuple[object, ...]]:
    """The order a debit draws lots in, as a sort key: soonest-expiring first, lots that
    never expire last, then oldest first (id). A clawback (``prefer_order_id``) draws the
    order's own lots first, its pending ones before the others, then the lots that are
    not pending, then other pending lots."""

    def key(lot: Lot) -> tuple[object, ...]:
        never = lot.expires_at is None
        at = lot.expires_at or datetime.max
        if prefer_order_id is None:
            return (never, at, lot.id)
        pending = lot.pending_until is not None
        own = lot.order_id == prefer_order_id
        rank = 0 if own and pending else 1 if own else 2 if not pending else 3
        return (rank, never, at, lot.id)

    return key


#: How many lots of an account a deferred block reads at first (PostgreSQL), in the order
#: debits draw them; the rest only when a debit goes past them (:func:`_read_rest`). A
#: customer with a long history has a lot per order, most of which no debit of a run
#: reaches.
LOT_PAGE = 8


@dataclass
class _OpenLots:
    """The lots with dust left of one account that a deferred block knows, by id: read
    (locked), opened, or given back to in the block."""

    lots: dict[int, Lot] = field(default_factory=dict)
    #: The :func:`draw_order` key (no order preferred) of the last lot read, when the
    #: account may have lots past it not read yet; None when every one was read.
    through: tuple[object, ...] | None = None
    #: Orders whose lots in the account were all read (a clawback draws those first).
    orders: set[str] = field(default_factory=set)


def load_lots(session: Session, account_ids: Iterable[int], order_ids: Iterable[str] = ()) -> None:
    """Read (and lock) the lots with dust left of the locked dust accounts
    ``account_ids`` in one statement, for the debits of a :func:`deferred` block to draw
    in memory: on PostgreSQL the first ``LOT_PAGE`` of each in draw order and every lot
    of ``order_ids`` (the orders the block may claw back), on SQLite all."""
    known: dict[int, _OpenLots] | None = session.info.get(LOTS)
    if known is None:
        return
    wanted = sorted(set(account_ids) - set(known))
    if not wanted:
        return
    write_new(session)  # the session may be clean: no flush would write them
    orders = sorted(set(order_ids))
    paged = session.get_bind().dialect.name == "postgresql"
    if paged:
        # Arrays, not lists: one statement text whatever the number of accounts and orders.
        ids = bindparam("wanted", wanted, type_=ARRAY(BigInteger))
        accounts = func.unnest(ids).table_valued("id").render_derived(name="wanted")
        page = (
            select(Lot.id)
            .where(Lot.account_id == accounts.c.id, Lot.remaining > 0)
            .order_by(Lot.expires_at.asc().nulls_last(), Lot.id)
            .limit(LOT_PAGE)
            .lateral()
        )
        first: Select[Any] | CompoundSelect[Any] = (
            select(page.c.id).select_from(accounts).join(page, true())
        )
        if orders:
            # A UNION of the two, not an OR in one WHERE: given the OR, PostgreSQL was seen
            # reading the whole table (a sequential scan, 20 ms at 41,000 lots); apart,
            # each half goes through the open lots' index.
            of_orders = bindparam("orders", orders, type_=ARRAY(String))
            first = union_all(
                first,
                select(Lot.id).where(
                    Lot.account_id == any_(ids), Lot.remaining > 0, Lot.order_id == any_(of_orders)
                ),
            )
        # "id = ANY(ARRAY(...))", not "id IN (...)": given the IN, PostgreSQL joined the
        # ids to a lots table of some thousands of rows by reading the table whole.
        stmt = select(Lot).where(Lot.id == any_(func.array(first.scalar_subquery())))
    else:
        stmt = select(Lot).where(Lot.account_id.in_(wanted), Lot.remaining > 0)
    for account_id in wanted:
        known[account_id] = _OpenLots(orders=set(orders))
    for lot in session.scalars(stmt.order_by(Lot.id).with_for_update()):
        known[lot.account_id].lots[lot.id] = lot
    if paged:
        key = draw_order(None)
        for account_id in wanted:
            state = known[account_id]
            if len(state.lots) >= LOT_PAGE:  # the page's last: no lot of an order is before it
                state.through = sorted(map(key, state.lots.values()))[LOT_PAGE - 1]


def _read_rest(session: Session, account_id: int) -> None:
    """Read (and lock) the lots with dust left of ``account_id`` that the block does not
    know yet: all of them are then known."""
    state: _OpenLots = session.info[LOTS][account_id]
    if state.through is None:
        return
    write_new(session)
    stmt = select(Lot).where(
        Lot.account_id == account_id, Lot.remaining > 0, Lot.id.not_in(list(state.lots))
    )
    for lot in session.scalars(stmt.order_by(Lot.id).with_for_update()):
        state.lots.setdefault(lot.id, lot)
    state.through = None


def _keep_lots(session: Session, account_id: int, lots: list[Lot]) -> None:
    """Lots opened or given back to while :func:`deferred`: among the account's lots read
    (when they were), so that its next debit can draw them."""
    known: dict[int, _OpenLots] | None = session.info.get(LOTS)
    if known is not None and account_id in known:
        for lot in lots:
            known[account_id].lots[lot.id] = lot


def open_lots(session: Session, account: Account, order_id: str | None = None) -> list[Lot]:
    """The dust account's lots with dust left (locked): those a :func:`deferred` block
    knows (all of ``order_id``'s among them), else all, read now."""
    known: dict[int, _OpenLots] | None = session.info.get(LOTS)
    if known is None:
        stmt = select(Lot).where(Lot.account_id == account.id, Lot.remaining > 0)
        return list(session.scalars(stmt.with_for_update()))
    load_lots(session, [account.id])
    state = known[account.id]
    if order_id is not None and order_id not in state.orders:
        _read_rest(session, account.id)
    return [lot for lot in state.lots.values() if lot.remaining > 0]


def _within(session: Session, lot: Lot, prefer_order_id: str | None) -> bool:
    """Whether no lot the block has not read comes before ``lot`` in the draw order of a
    debit (:func:`draw_order`) that prefers ``prefer_order_id``."""
    known: dict[int, _OpenLots] | None = session.info.get(LOTS)
    state = known.get(lot.account_id) if known is not None else None
    if state is None or state.through is None:
        return True
    if prefer_order_id is not None and lot.order_id == prefer_order_id:
        return True  # the order's own lots come first, and all are known
    if prefer_order_id is not None and lot.pending_until is not None:
        return False  # other pending lots come after every lot that is not pending
    return draw_order(None)(lot) <= state.through


def _draw_lots(
    session: Session, account: Account, entry: Entry, amount: int, prefer_order_id: str | None
) -> None:
    # Only with a real order id does a draw prefer an order's lots (lots without an
    # order, admin credits, are not an order's own).
    while True:
        lots = open_lots(session, account, prefer_order_id)
        if prefer_order_id is None:
            lots = [lot for lot in lots if lot.pending_until is None]
        lots.sort(key=draw_order(prefer_order_id))
        plan: list[tuple[Lot, int]] = []
        left = amount
        for lot in lots:
            if not _within(session, lot, prefer_order_id):
                break
            take = min(lot.remaining, left)
            plan.append((lot, take))
            left -= take
            if not left:
                break
        known: dict[int, _OpenLots] | None = session.info.get(LOTS)
        if not left or known is None or known[account.id].through is None:
            break
        _read_rest(session, account.id)  # the lots read do not decide it: read them all
    for lot, take in plan:
        lot.remaining -= take
        if lot.pending_until is not None:
            account.pending -= take
        _add_movement(session, entry, lot, take)
    if left:
        # I4 says the lots always cover a non-negative balance; if not, stop the transaction.
        raise AssertionError(f"account {account.id}: lots short by {left} for entry {entry.id}")
    if IDS not in session.info:
        session.flush()
