"""One module per commerce event (docs/CONTRACT.md §3.3). ``SUBSCRIBERS`` maps event names to their
handler; a name not in it is recorded as ``ignored``. ``BULK_SUBSCRIBERS`` maps the names
whose events a batch may also apply many at a time, set-based (``dust.inbox``);
``BULK_CANDIDATES`` which of their events it may take (default: all). ``TOUCHES`` maps the
names whose events a batch may run one after another in one savepoint, their order rows
and dust accounts locked together first (``dust.inbox``), to what an event touches."""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from dust.ledger import charging, holds, journal, orders
from dust.ledger.accounts import KNOWN, lock_existing_accounts
from dust.models.tables import DUST
from dust.subscribers import (
    customer_created,
    order_canceled,
    order_placed,
    product_updated,
    refund_created,
)
from dust.subscribers.base import BulkHandler, Envelope, Handler, Toucher, Touches, is_identifier

SUBSCRIBERS: dict[str, Handler] = {
    "customer.created": customer_created.handle,
    "customer.updated": customer_created.handle,
    "product.created": product_updated.handle,
    "product.updated": product_updated.handle,
    "order.placed": order_placed.handle,
    "refund.created": refund_created.handle,
    "order.canceled": order_canceled.handle,
}

BULK_SUBSCRIBERS: dict[str, BulkHandler] = {
    "order.placed": order_placed.prepare_many,
    "customer.created": customer_created.prepare_many,
    "customer.updated": customer_created.prepare_many,
}

BULK_CANDIDATES: dict[str, Callable[[Envelope], bool]] = {
    "order.placed": order_placed.bulk_candidate,
}

TOUCHES: dict[str, Toucher] = {
    "customer.created": customer_created.touched,
    "customer.updated": customer_created.touched,
    "order.placed": order_placed.touched,
    "refund.created": refund_created.touched,
    "order.canceled": order_canceled.touched,
}


def lock_run(session: Session, touched: list[Touches]) -> None:
    """Before the events of a run go one after another in one transaction (``dust.inbox``):
    lock their orders (one statement, id order), then the accounts of their customers and
    of the orders' customers (one statement, id order; none opened), then read their cart
    holds (their accounts locked), the orders' refunds, which of their refund ids are
    recorded and which of their products are dust-only; so that their subscribers find
    all that without a round trip; and the lots of the dust accounts its charges and
    clawbacks may draw (``journal.load_lots``), and the charges and lot draws of the orders
    it may give back to (``charging.load_spends``). :func:`end_run` forgets what may change
    outside those locks (holds, refund ids, products)."""
    locked = orders.lock_orders(session, [t.order_id for t in touched if t.order_id])
    customers = {t.customer_id for t in touched if t.customer_id}
    customers |= {o.customer_id for o in locked.values() if o.customer_id}
    lock_existing_accounts(session, customers)
    drawing = {t.customer_id for t in touched if t.draws}
    drawing |= {o.customer_id for t in touched if t.draws and (o := locked.get(t.order_id or ""))}
    known = session.info.get(KNOWN, {})  # a guest (None) or a new customer has none
    drawn = [t.order_id for t in touched if t.draws and t.order_id]  # clawbacks prefer them
    dust_accounts = [known[c, DUST, None] for c in drawing if (c, DUST, None) in known]
    journal.load_lots(session, dust_accounts, drawn)
    charging.load_spends(session, drawn)
    carts = {t.cart_id for t in touched if t.cart_id}
    holds.load_cart_holds(session, carts | {o.cart_id for o in locked.values() if o.cart_id})
    orders.load_refunds(session, locked)
    orders.load_refund_ids(session, {t.refund_id for t in touched if t.refund_id})
    order_placed.remember_dust_only(session, {p for t in touched for p in t.product_ids})


#: Where an event names its order and its customer (payload fields), for :func:`lock_first`.
LOCK_KEYS: dict[str, tuple[str | None, str | None]] = {
    "order.placed": ("id", "customer_id"),
    "refund.created": ("order_id", "customer_id"),
    "order.canceled": ("id", None),
    "customer.created": (None, "id"),
    "customer.updated": (None, "id"),
}


@dataclass(frozen=True)
class Locked:
    """What :func:`lock_first` found: every order of the batch's events that has a row,
    with its customer, and the rows it skipped (another transaction holds them), as
    :func:`batch_keys` names them."""

    orders: dict[str, str | None] = field(default_factory=dict)
    busy: frozenset[str] = frozenset()


def lock_first(session: Session, envelopes: list[Envelope], *, wait: bool = True) -> Locked:
    """At the start of a batch's transaction: lock the orders that exist of all its events
    (one statement, id order), then the accounts that exist of their customers and of
    those orders' customers (one statement, id order). Every later step of the
    transaction (set-based, runs, one at a time) then finds its rows locked, so two
    workers' transactions wait on each other in one order and never deadlock on them; a
    row that does not exist yet (a new order, a new account) is created, not waited for.
    Creates nothing: a new order keeps the set-based path. The ids are read from the
    payloads without validating them (locking a row an invalid event names does no harm;
    a value that is not an id, never sent to the database, is skipped).

    Without ``wait`` (PostgreSQL), a row another transaction holds is skipped, not waited
    for (``SKIP LOCKED``): the caller leaves the events that touch it, and those joined to
    them, to a later transaction, and applies the others at once. Two workers' batches
    then rarely wait on each other: batches of 50 events on 1,000 customers share an
    account nine times in ten."""
    order_ids: set[str] = set()
    customers: set[str] = set()
    for envelope in envelopes:
        order_field, customer_field = LOCK_KEYS.get(envelope.name, (None, None))
        order_id = envelope.data.get(order_field) if order_field else None
        customer_id = envelope.data.get(customer_field) if customer_field else None
        if is_identifier(order_id):
            order_ids.add(order_id)
        if is_identifier(customer_id):
            customers.add(customer_id)
    locked, busy = orders.lock_existing_orders(session, order_ids, skip_locked=not wait)
    found = {o.order_id: o.customer_id for o in locked.values()} | busy
    customers |= {c for c in found.values() if c}
    held = lock_existing_accounts(session, customers, skip_locked=not wait)
    keys = {f"order:{o}" for o in busy} | {f"customer:{c}" for c in held}
    return Locked(found, frozenset(keys))


def batch_keys(envelope: Envelope, orders: Mapping[str, str | None]) -> set[str] | None:
    """What an event of a batch may touch, for the inbox to tell which events are
    independent of those ahead of them: its order, its customers (named in its payload,
    and the customer of its order's row in ``orders``: the batch's orders with a row, read
    by :func:`lock_first`) and an order's cart, as ``order:<id>``, ``customer:<id>`` and
    ``cart:<id>``. An order with no row yet is its customer's through the event that
    places it: the inbox joins the events that share a key. Empty for an event no
    subscriber takes (recorded ``ignored``); None for one that may change what any other
    event does (a product event changes what orders of it earn). A value that is not a
    string is no key: the event is rejected, and touches nothing."""
    if envelope.name not in SUBSCRIBERS:
        return set()
    if envelope.name not in LOCK_KEYS:
        return None
    order_field, customer_field = LOCK_KEYS[envelope.name]
    keys: set[str] = set()
    order_id = envelope.data.get(order_field) if order_field else None
    customer_id = envelope.data.get(customer_field) if customer_field else None
    cart_id = envelope.data.get("cart_id") if envelope.name == "order.placed" else None
    if isinstance(order_id, str):
        keys.add(f"order:{order_id}")
        if row_customer := orders.get(order_id):
            keys.add(f"customer:{row_customer}")
    if isinstance(customer_id, str):
        keys.add(f"customer:{customer_id}")
    if isinstance(cart_id, str):
        keys.add(f"cart:{cart_id}")
    return keys


def goes_first(envelope: Envelope, orders: Container[str]) -> bool:
    """Whether a batch may take the event set-based ahead of the events before it that
    share none of its :func:`batch_keys`: one a bulk subscriber may take
    (``BULK_CANDIDATES``) and, for an order, one with no row yet (``orders``: the batch's
    orders with a row: a row means a refund, a cancel or this order came first)."""
    if envelope.name not in BULK_SUBSCRIBERS:
        return False
    candidate = BULK_CANDIDATES.get(envelope.name)
    if candidate is not None and not candidate(envelope):
        return False
    order_field, _ = LOCK_KEYS.get(envelope.name, (None, None))
    order_id = envelope.data.get(order_field) if order_field else None
    return not (isinstance(order_id, str) and order_id in orders)


def end_run(session: Session) -> None:
    holds.forget_cart_holds(session)
    orders.forget_refund_ids(session)
    order_placed.forget_dust_only(session)
