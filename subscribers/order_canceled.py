"""``order.canceled``: release the cart's holds, give back what the order charged (dust to
the lots it came from, store credit to its account), claw back all dust it earned. A cancel
that arrives before its order is remembered; the order then charges and earns nothing."""

from __future__ import annotations

from sqlalchemy.orm import Session

from dust.ledger import charging, orders
from dust.subscribers.base import (
    Context,
    Envelope,
    Identifier,
    Outcome,
    Payload,
    Touches,
    parse,
    valid,
)


class OrderCanceledPayload(Payload):
    id: Identifier


def handle(session: Session, envelope: Envelope, context: Context) -> Outcome:
    canceled = parse(OrderCanceledPayload, envelope.data, context)
    order = orders.lock_order(session, canceled.id)
    if order.canceled:
        return Outcome("ignored", f"order {canceled.id} already canceled")
    order.canceled = True
    order.canceled_at = envelope.occurred_at
    outcome = Outcome()
    if order.placed_event_id is None:
        outcome.detail["waiting_for_order"] = True
    else:
        outcome.detail["returned"] = charging.return_charges(session, order, envelope.id)
    outcome.detail["clawed_back"] = -orders.settle_earnings(
        session, order, envelope.id, context.policy
    )
    return outcome


def touched(envelope: Envelope, context: Context) -> Touches | None:
    payload = valid(OrderCanceledPayload, envelope, context)
    return None if payload is None else Touches(order_id=payload.id, draws=True)
