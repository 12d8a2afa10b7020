"""An order's effect on the ledger, derived from what is known about the order.

Events of one order (placed, refunds, canceled) may arrive in any order
(docs/CONTRACT.md §3.2). Each subscriber records its fact in ``dust_orders`` /
``dust_refunds`` and then calls :func:`settle_earnings` here (what the order earns) and the
functions of :mod:`dust.ledger.charging` (what it takes and gives back), which compare the
order's *target* (what the ledger should show given everything known) with what it already
shows, and post only the difference. Because targets depend on the set of facts, not on their
arrival order, every arrival order converges to the same balances and lots.

Lock order: the order row first, then accounts (id order), then holds and lots.

What these functions change on the order, its refunds, holds and accounts is written when
the session next reads or commits (no flush of their own): the events of a batch's run
(``dust.inbox``) then write several orders' changes in one statement.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dust.ledger import earning, journal
from dust.ledger import holds as holds_
from dust.ledger.accounts import (
    ABSENT_REFUNDS,
    IDS,
    LOCKED_ORDERS,
    LOTS,
    ORDER_REFUNDS,
    SPENDS,
    ensure_account,
    lock_accounts,
    lock_dust_accounts,
)
from dust.ledger.earning import lot_expiry
from dust.ledger.journal import Ref
from dust.models import Account, Lot, Order, Refund
from dust.models.base import insert_for, utcnow
from dust.models.bulk import insert_rows
from dust.models.tables import DUST


@dataclass(frozen=True)
class EarnPolicy:
    """What settings the earning rules need, passed in so the ledger never reads the env."""

    points_ttl_days: int
    clawback_policy: str  # "debt" | "clamp"
    #: Days an order's earned dust stays pending (in the balance, not available); 0: off.
    pending_days: int = 0
    #: Cap on the product of the earn rules' multipliers (ledger.rules).
    max_multiplier: Decimal = Decimal(10)


def lock_order(session: Session, order_id: str) -> Order:
    """The order's state row, created empty if this is the first event of the order, and
    locked for the rest of the transaction (found without a round trip when
    :func:`lock_orders` locked it earlier in the transaction)."""
    locked: dict[str, Order] = session.info.get(LOCKED_ORDERS, {})
    if order_id in locked:
        return locked[order_id]
    insert = insert_for(session)
    session.execute(insert(Order).values(order_id=order_id).on_conflict_do_nothing())
    order = session.scalar(
        select(Order)
        .where(Order.order_id == order_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert order is not None
    return order


def lock_orders(session: Session, order_ids: Iterable[str]) -> dict[str, Order]:
    """:func:`lock_order` for many orders at once: the rows missing created empty (one
    INSERT), then all locked in one statement, in ``order_id`` order (so two transactions
    never wait on each other's orders in opposite orders), and remembered for the rest of
    the transaction, so that :func:`lock_order` finds them without a round trip."""
    locked: dict[str, Order] = session.info.setdefault(LOCKED_ORDERS, {})
    asked = set(order_ids)
    wanted = sorted(asked - set(locked))  # those locked earlier stay locked and current
    if not wanted:
        return {order_id: locked[order_id] for order_id in asked}
    # The columns' defaults, as ``lock_order``'s INSERT writes them (a JSON document
    # insert writes only the columns it names).
    empty = {
        c.name: c.default.arg
        for c in Order.__table__.columns
        if c.default is not None and c.default.is_scalar
    }
    rows = [empty | {"order_id": order_id} for order_id in wanted]
    created = insert_rows(session, Order.__table__, rows, skip_conflicts=True, returning="order_id")
    # An order's refunds and charges are written only under its lock, so one whose row
    # this transaction created has none yet: nothing to read for it later (forget_locks
    # drops this with the locks, should a savepoint take the rows back).
    session.info.setdefault(ORDER_REFUNDS, {}).update((o, []) for o in created)
    if (spends := session.info.get(SPENDS)) is not None:
        spends.update((o, []) for o in created)
    stmt = (
        select(Order)
        .where(Order.order_id.in_(wanted))
        .order_by(Order.order_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    found = {order.order_id: order for order in session.scalars(stmt)}
    assert len(found) == len(wanted), "an order row vanished"
    locked.update(found)
    return {order_id: locked[order_id] for order_id in asked}


def lock_existing_orders(
    session: Session, order_ids: Iterable[str], *, skip_locked: bool = False
) -> tuple[dict[str, Order], dict[str, str | None]]:
    """Lock those of ``order_ids`` that have a row (one statement, ``order_id`` order),
    creating none, and remember them as :func:`lock_orders` does. ``skip_locked``
    (PostgreSQL): a row another transaction holds is skipped, not waited for. Returns the
    rows locked, and the orders skipped with their customers (read without a lock; an
    order's customer never changes once recorded, but an order another transaction is
    placing shows none until it commits: its events are then joined by the order alone)."""
    wanted = sorted(set(order_ids))
    if not wanted:
        return {}, {}
    stmt = (
        select(Order)
        .where(Order.order_id.in_(wanted))
        .order_by(Order.order_id)
        .with_for_update(skip_locked=skip_locked)
        .execution_options(populate_existing=True)
    )
    found = {order.order_id: order for order in session.scalars(stmt)}
    session.info.setdefault(LOCKED_ORDERS, {}).update(found)
    busy: dict[str, str | None] = {}
    if skip_locked and len(found) < len(wanted):
        rest = [order_id for order_id in wanted if order_id not in found]
        exist = select(Order.order_id, Order.customer_id).where(Order.order_id.in_(rest))
        busy = {order_id: customer_id for order_id, customer_id in session.execute(exist)}
    return found, busy


def order_refunds(session: Session, order_id: str) -> list[Refund]:
    """Every refund of a locked order, in arrival order (``created_at``, then id): read
    once per transaction (or with the order's batch, :func:`load_refunds`), then kept, as
    refunds of an order are written only under its lock (:func:`add_refund`)."""
    known: dict[str, list[Refund]] = session.info.setdefault(ORDER_REFUNDS, {})
    if order_id not in known:
        known[order_id] = list(
            session.scalars(
                select(Refund)
                .where(Refund.order_id == order_id)
                .order_by(Refund.created_at, Refund.refund_id)
            )
        )
    return known[order_id]


def load_refunds(session: Session, order_ids: Iterable[str]) -> None:
    """:func:`order_refunds` of many locked orders read in one statement."""
    wanted = set(order_ids)
    known: dict[str, list[Refund]] = session.info.setdefault(ORDER_REFUNDS, {})
    if not (wanted := wanted - set(known)):
        return
    for order_id in wanted:
        known[order_id] = []
    stmt = (
        select(Refund)
        .where(Refund.order_id.in_(wanted))
        .order_by(Refund.created_at, Refund.refund_id)
    )
    for refund in session.scalars(stmt):
        known[refund.order_id].append(refund)


def add_refund(session: Session, refund: Refund) -> None:
    """Record a new refund of a locked order (last in its arrival order)."""
    refunds = order_refunds(session, refund.order_id)
    session.add(refund)
    if IDS not in session.info:  # a deferred block (dust.ledger.journal) flushes at its end
        session.flush()
    refunds.append(refund)
    session.info.get(ABSENT_REFUNDS, set()).discard(refund.refund_id)


def find_refund(session: Session, refund_id: str) -> Refund | None:
    """The refund ``refund_id`` if recorded; without a round trip for one that
    :func:`load_refund_ids` found missing."""
    if refund_id in session.info.get(ABSENT_REFUNDS, ()):
        return None
    return session.get(Refund, refund_id)


def load_refund_ids(session: Session, refund_ids: Iterable[str]) -> None:
    """Read which of ``refund_ids`` are recorded (one statement), for :func:`find_refund`
    until :func:`forget_refund_ids`. Refund ids are unique across orders: one recorded by
    another transaction meanwhile makes the insert of the same id fail, as one at a time."""
    wanted = set(refund_ids)
    if not wanted:
        return
    found = set(session.scalars(select(Refund.refund_id).where(Refund.refund_id.in_(wanted))))
    session.info[ABSENT_REFUNDS] = wanted - found


def forget_refund_ids(session: Session) -> None:
    session.info.pop(ABSENT_REFUNDS, None)


def refunded_total(session: Session, order_id: str) -> int:
    """Money refunded on the order by the refunds that passed its caps."""
    return applied_sums(session, order_id)[0]


def earn_target(session: Session, order: Order) -> tuple[int, str | None]:
    """The dust the order should have earned, net, given everything known; and why it is
    zero when it is (``dust.ledger.earning.earn_target``)."""
    placed = order.placed_event_id is not None
    return earning.earn_target(
        placed=placed,
        canceled=order.canceled,
        guest=order.customer_id is None,
        base=order.earn_base,
        refunded=refunded_total(session, order.order_id) if placed else 0,
        rate=earning.multiplied_rate(order.earn_rate, order.earn_multiplier),
    )


# -- many new orders at once -------------------------------------------------------------


@dataclass(frozen=True)
class NewOrder:
    """An ``order.placed`` of an order no event has touched yet, which charges nothing."""

    order_id: str
    customer_id: str | None
    cart_id: str | None
    currency_code: str
    event_id: str
    placed_at: datetime
    earn_base: int
    earn_rate: str
    refund_cap: int
    #: The earn rules' capped multiplier and their ids (``dust.ledger.rules.Earning``).
    earn_multiplier: str | None = None
    earn_rules: str | None = None

    def _target(self) -> tuple[int, str | None]:
        """What :func:`earn_target` gives such an order: no refund or cancel is known yet."""
        return earning.earn_target(
            placed=True,
            canceled=False,
            guest=self.customer_id is None,
            base=self.earn_base,
            refunded=0,
            rate=earning.multiplied_rate(self.earn_rate, self.earn_multiplier),
        )

    @property
    def earned(self) -> int:
        return self._target()[0]

    @property
    def no_earn_reason(self) -> str | None:
        return self._target()[1]


def orders_with_rows(session: Session, order_ids: list[str]) -> set[str]:
    """Which of ``order_ids`` some event has touched already (they have a row)."""
    stmt = select(Order.order_id).where(Order.order_id.in_(order_ids))
    return set(session.scalars(stmt))


def place_new(session: Session, new: list[NewOrder], policy: EarnPolicy) -> bool:
    """Record many new orders and post what they earn, in a few statements for all of them:
    the order rows, the customers' dust accounts (opened if need be, locked in id order),
    the earn entries and their lots. The ledger's ``charging.charge`` and :func:`settle_earnings`
    give each in turn: nothing to charge, nothing refunded or canceled yet.

    Returns False when one of the orders has a row already (an event of it committed
    since the caller checked with :func:`orders_with_rows`): what was written must then be
    rolled back, and the events applied one at a time.
    """
    rows = [
        {
            "order_id": o.order_id,
            "customer_id": o.customer_id,
            "cart_id": o.cart_id,
            "currency_code": o.currency_code,
            "placed_event_id": o.event_id,
            "placed_at": o.placed_at,
            "earn_base": o.earn_base,
            "earn_rate": o.earn_rate,
            "earn_multiplier": o.earn_multiplier,
            "earn_rules": o.earn_rules,
            "dust_total": 0,
            "store_credit_total": 0,
            "charged_dust": 0,
            "charged_store_credit": 0,
            "returned": False,
            "earned": o.earned,
            "clawed_back": 0,
            "forgiven": 0,
            "canceled": False,
            "canceled_at": None,
            "no_earn_reason": o.no_earn_reason,
            "refund_cap": o.refund_cap,
            "dust_given_back": 0,
        }
        for o in new
    ]
    inserted = insert_rows(
        session, Order.__table__, rows, skip_conflicts=True, returning="order_id"
    )
    if len(inserted) != len(rows):
        return False
    accounts = lock_dust_accounts(session, [o.customer_id for o in new if o.customer_id])
    now = utcnow()
    credits = [
        journal.Credit(
            accounts[o.customer_id],
            o.earned,
            Ref("earn", "order", o.order_id, f"order:{o.order_id}:earn:0", o.event_id),
            expires_at=lot_expiry(o.placed_at, policy.points_ttl_days),
            order_id=o.order_id,
            pending_until=pending_until(o.placed_at, policy.pending_days, now),
        )
        for o in new
        if o.earned and o.customer_id is not None
    ]
    journal.credit_many(session, credits)
    return True


# -- earning ---------------------------------------------------------------------------


def settle_earnings(session: Session, order: Order, event_id: str, policy: EarnPolicy) -> int:
    """Post the earn or clawback that brings the order's net earned dust to its target.

    Returns the change in net earned dust (positive: earned, negative: clawed back).
    """
    target, why_not = earn_target(session, order)
    if order.placed_event_id is not None:
        order.no_earn_reason = why_not
    net = order.earned - order.clawed_back - order.forgiven
    if target == net:
        return 0
    assert order.customer_id is not None, "only a customer's order can have earned dust"
    account_id = ensure_account(session, order.customer_id, DUST)
    account = lock_accounts(session, [account_id])[account_id]
    if target > net:
        amount = target - net
        expires_at = lot_expiry(order.placed_at, policy.points_ttl_days)
        key = f"order:{order.order_id}:earn:{order.earned}"
        ref = Ref("earn", "order", order.order_id, key, event_id)
        order.earned += amount  # before the entry: the order's row goes in the same flush
        journal.credit(
            session,
            account,
            amount,
            ref,
            expires_at=expires_at,
            order_id=order.order_id,
            pending_until=pending_until(order.placed_at, policy.pending_days, utcnow()),
        )
        return amount
    return -clawback(session, account, order, net - target, event_id, policy)


def clawback(
    session: Session, account: Account, order: Order, amount: int, event_id: str, policy: EarnPolicy
) -> int:
    """Take back ``amount`` of the order's earned dust from a locked dust account.

    ``debt``: the whole amount, the balance may go negative (later credits repay it).
    ``clamp``: at most what is available; the rest is forgiven and recorded on the entry
    (or, when nothing at all can be taken, on the order only). Returns what was owed.
    """
    key = f"order:{order.order_id}:clawback:{order.clawed_back + order.forgiven}"
    if policy.clawback_policy == "debt":
        take, forgiven = amount, 0
    else:
        # The order's own pending dust is taken back first; beyond it, what is available.
        own = _pending_of_order(session, account, order.order_id)
        take = min(amount, own + max(0, holds_.available(account)))
        forgiven = amount - take
    # Before the entry: the order's row goes in the same flush.
    order.clawed_back += take
    order.forgiven += forgiven
    if take:
        ref = Ref("clawback", "order", order.order_id, key, event_id)
        journal.debit(
            session,
            account,
            take,
            ref,
            allow_debt=True,
            prefer_order_id=order.order_id,
            forgiven=forgiven,
        )
    return amount


def pending_until(placed_at: datetime | None, pending_days: int, now: datetime) -> datetime | None:
    """Until when dust earned on an order placed at ``placed_at`` is pending; None when
    pending is off or the window is already over (a late event or a backfill: the dust
    is available at once, as the lot job would have made it)."""
    if pending_days == 0 or placed_at is None:
        return None
    until = placed_at + timedelta(days=pending_days)
    return until if until > now else None


def _pending_of_order(session: Session, account: Account, order_id: str) -> int:
    """Σ remaining of the order's pending lots in ``account``."""
    if not account.pending:
        return 0
    if LOTS in session.info:  # a deferred block (dust.ledger.journal): its lots are read once
        lots = journal.open_lots(session, account, order_id)
        return sum(
            lot.remaining
            for lot in lots
            if lot.order_id == order_id and lot.pending_until is not None
        )
    total = session.scalar(
        select(func.coalesce(func.sum(Lot.remaining), 0)).where(
            Lot.account_id == account.id,
            Lot.order_id == order_id,
            Lot.pending_until.is_not(None),
        )
    )
    return int(total or 0)


def applied_sums(session: Session, order_id: str) -> tuple[int, int]:
    """Money and dust of the order's applied refunds."""
    applied = [r for r in order_refunds(session, order_id) if r.status == "applied"]
    return sum(r.amount for r in applied), sum(r.dust_amount for r in applied)
