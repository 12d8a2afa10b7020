"""``order.placed``: charge what the order spent, then earn dust on what it paid.

1. Charge: capture the cart's holds (partly, when larger than the charge; the rest is
   released), debit any remainder if available; what cannot be charged makes the event
   ``needs_attention`` with the shortfall.
2. Refunds that arrived first are checked against the order's caps now: applied, or held
   (``needs_attention``, nothing credited).
3. Earn: the formula of ``dust.ledger.earning`` as one lot; guests earn nothing. A cancel that
   arrived first is applied now.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from pydantic import Field, ValidationError, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from dust.ledger import charging, earning, holds, orders, rules
from dust.models import Order, Product
from dust.subscribers.base import (
    Amount,
    Context,
    Currency,
    Envelope,
    Identifier,
    Outcome,
    Payload,
    PositiveAmount,
    Prepared,
    Rejected,
    Touches,
    parse,
    valid,
    validation_context,
)

MAX_ITEMS = 1000


class Item(Payload):
    id: Identifier | None = None
    product_id: Identifier | None = None
    quantity: PositiveAmount = 1
    total: Amount
    #: A gift card earns nothing (its money earns when it is spent).
    is_giftcard: bool = False


class OrderPlacedPayload(Payload):
    id: Identifier
    customer_id: Identifier | None = None
    cart_id: Identifier | None = None
    currency_code: Currency
    total: Amount
    shipping_total: Amount = 0
    tax_total: Amount = 0
    dust_total: Amount = 0
    store_credit_total: Amount = 0
    #: Money paid with gift cards or credit lines that are not Dust's: earns nothing.
    gift_card_total: Amount = 0
    items: list[Item] | None = Field(default=None, max_length=MAX_ITEMS)
    #: The platform's own decimal strings, kept in the stored envelope, never used.
    raw: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _totals_add_up(self) -> OrderPlacedPayload:
        if self.items is None and self.shipping_total + self.tax_total > self.total:
            raise ValueError("shipping_total + tax_total exceed total")
        return self


def dust_only_products(session: Session, orders: list[OrderPlacedPayload]) -> set[str]:
    """Which products of the orders' items are dust-only (one query for all)."""
    product_ids = {i.product_id for o in orders for i in o.items or () if i.product_id}
    if not product_ids:
        return set()
    asked, dust_only = session.info.get(DUST_ONLY, (frozenset(), set()))
    if product_ids <= asked:
        return product_ids & dust_only
    stmt = select(Product.product_id).where(
        Product.product_id.in_(product_ids), Product.dust_only.is_(True)
    )
    return set(session.scalars(stmt))


def paid_order(order: OrderPlacedPayload, dust_only: set[str]) -> earning.PaidOrder:
    """The order as the earn formula and the refund cap see it."""
    items = None
    if order.items is not None:
        items = [
            earning.Line(i.total, i.product_id in dust_only, i.is_giftcard) for i in order.items
        ]
    return earning.PaidOrder(
        total=order.total,
        shipping_total=order.shipping_total,
        tax_total=order.tax_total,
        dust_total=order.dust_total,
        store_credit_total=order.store_credit_total,
        gift_card_total=order.gift_card_total,
        items=items,
    )


def record(
    session: Session,
    order: Order,
    placed: OrderPlacedPayload,
    envelope: Envelope,
    context: Context,
) -> None:
    """Store what the order says, once: its charges, earning base and rate."""
    if order.customer_id is not None and order.customer_id != placed.customer_id:
        raise Rejected(f"order {placed.id} belongs to customer {order.customer_id}")
    # The product lookup first: every field below then goes out in one UPDATE.
    paid = paid_order(placed, dust_only_products(session, [placed]))
    redeem = context.redeem_value(placed.currency_code)
    order.customer_id = placed.customer_id
    order.cart_id = placed.cart_id
    order.currency_code = placed.currency_code
    order.placed_event_id = envelope.id
    order.placed_at = envelope.occurred_at
    order.earn_base = earning.earn_base(paid, redeem)
    order.refund_cap = earning.refund_cap(paid, redeem)
    order.earn_rate = str(context.earn_rate(placed.currency_code))
    order.dust_total = placed.dust_total
    order.store_credit_total = placed.store_credit_total


def handle(session: Session, envelope: Envelope, context: Context) -> Outcome:
    placed = parse(OrderPlacedPayload, envelope.data, context)
    order = orders.lock_order(session, placed.id)
    recorded = order.placed_event_id is None
    if recorded:
        record(session, order, placed, envelope, context)
    elif order.placed_event_id != envelope.id:
        return Outcome(
            "ignored", f"order {placed.id} already placed by event {order.placed_event_id}"
        )
    # else: an explicit replay of this very event (it needed attention). The order is
    # recorded already; charging again takes only what is still owed.

    outcome = Outcome()
    if order.canceled:
        if order.cart_id:
            holds.release_cart(session, order.cart_id)
        outcome.detail["canceled"] = True
    else:
        charged = charging.charge(session, order, envelope.id)
        outcome.detail.update(captured=charged.captured, debited=charged.debited)
        if charged.shortfall:
            outcome.status = "needs_attention"
            outcome.reason = "could not charge " + ", ".join(
                f"{amount} {kind}" for kind, amount in sorted(charged.shortfall.items())
            )
            outcome.detail["shortfall"] = charged.shortfall
    refunds = charging.settle_refunds(session, order, envelope.id)
    if recorded:
        rules.apply_to_order(session, order, rules.load(session), context.policy)
    earned = orders.settle_earnings(session, order, envelope.id, context.policy)
    outcome.detail["earned"] = earned
    if order.earn_rules:
        outcome.detail["earn_rules"] = json.loads(order.earn_rules)
    if refunds.credits:
        outcome.detail["refund_credits"] = [c.__dict__ for c in refunds.credits]
    if refunds.dust_returned:
        outcome.detail["dust_returned"] = refunds.dust_returned
    if refunds.held:
        # Refunds that came first and pass the order's caps: an admin decides.
        outcome.detail["refunds_held"] = refunds.held
        outcome.status = "needs_attention"
        held = "; ".join(refunds.held.values())
        outcome.reason = f"{outcome.reason}; {held}" if outcome.reason else held
    return outcome


def touched(envelope: Envelope, context: Context) -> Touches | None:
    placed = valid(OrderPlacedPayload, envelope, context)
    if placed is None:
        return None
    products = tuple(i.product_id for i in placed.items or () if i.product_id)
    return Touches(
        placed.id, placed.customer_id, placed.cart_id, products, draws=placed.dust_total > 0
    )


#: ``session.info`` key: the products :func:`remember_dust_only` read, and which of them
#: are dust-only (until :func:`forget_dust_only`: a ``product.updated`` may change them).
DUST_ONLY = "dust.products.dust_only"


def remember_dust_only(session: Session, product_ids: set[str]) -> None:
    """Read which of ``product_ids`` are dust-only (one query), for
    :func:`dust_only_products` to answer without a round trip."""
    if not product_ids:
        return
    stmt = select(Product.product_id).where(
        Product.product_id.in_(product_ids), Product.dust_only.is_(True)
    )
    session.info[DUST_ONLY] = (frozenset(product_ids), set(session.scalars(stmt)))


def forget_dust_only(session: Session) -> None:
    session.info.pop(DUST_ONLY, None)


def bulk_candidate(envelope: Envelope) -> bool:
    """Whether :func:`prepare_many` may take the event (an order that charges nothing)."""
    data = envelope.data
    return not data.get("dust_total") and not data.get("store_credit_total")


def prepare_many(session: Session, envelopes: list[Envelope], context: Context) -> Prepared | None:
    """The first ``order.placed`` of ``envelopes`` applied together, set-based
    (``orders.place_new``): as long as each is the first event of its order, charges
    nothing and its cart holds nothing. The same outcome and ledger as :func:`handle` for
    each in turn; the others are left to it. None when the first is not such an event."""
    placed: list[OrderPlacedPayload] = []
    for envelope in envelopes:
        try:
            one = OrderPlacedPayload.model_validate(
                envelope.data, context=validation_context(context)
            )
        except ValidationError:
            break  # handle() rejects it with the reason
        if one.dust_total or one.store_credit_total or any(p.id == one.id for p in placed):
            break
        placed.append(one)
    if placed and (known := orders.orders_with_rows(session, [p.id for p in placed])):
        # A refund or cancel came first, or a redelivery: handle() takes those.
        placed = list(itertools.takewhile(lambda p: p.id not in known, placed))
    carts = {p.cart_id for p in placed if p.cart_id}
    if carts and (holding := holds.carts_with_active_holds(session, carts)):
        placed = list(itertools.takewhile(lambda p: p.cart_id not in holding, placed))
    if not placed:
        return None
    dust_only = dust_only_products(session, placed)
    rule_earnings = rules.earnings(
        session,
        rules.load(session),
        [
            rules.Placement(p.customer_id, envelope.occurred_at, p.currency_code)
            for p, envelope in zip(placed, envelopes, strict=False)
        ],
        context.policy,
    )
    new = []
    for p, envelope, by_rules in zip(placed, envelopes, rule_earnings, strict=False):
        paid = paid_order(p, dust_only)
        redeem = context.redeem_value(p.currency_code)
        new.append(
            orders.NewOrder(
                order_id=p.id,
                customer_id=p.customer_id,
                cart_id=p.cart_id,
                currency_code=p.currency_code,
                event_id=envelope.id,
                placed_at=envelope.occurred_at,
                earn_base=earning.earn_base(paid, redeem),
                earn_rate=str(context.earn_rate(p.currency_code)),
                refund_cap=earning.refund_cap(paid, redeem),
                earn_multiplier=by_rules.stored_multiplier if p.customer_id else None,
                earn_rules=by_rules.stored_rules if p.customer_id else None,
            )
        )
    return Prepared(
        [_bulk_outcome(o) for o in new], lambda s: orders.place_new(s, new, context.policy)
    )


def _bulk_outcome(order: orders.NewOrder) -> Outcome:
    detail: dict[str, object] = {"captured": {}, "debited": {}, "earned": order.earned}
    if order.earn_rules:
        detail["earn_rules"] = list(rules.parse_rule_ids(order.earn_rules))
    return Outcome(detail=detail)
