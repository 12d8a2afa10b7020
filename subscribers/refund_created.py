"""``refund.created``: refund to store credit and claw back the dust the refund unearned.

After all refunds, the order's net earned dust is
``floor(max(0, base_without_refunds − refunded_total) × rate)``. A refund that arrives
before its order is remembered and applied when the order arrives.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from ledger import orders
from models import Refund
from models.base import utcnow
from subscribers.base import (
    Context,
    Currency,
    Envelope,
    Identifier,
    Outcome,
    Payload,
    PositiveAmount,
    Rejected,
    parse,
)


class RefundPayload(Payload):
    id: Identifier
    order_id: Identifier
    customer_id: Identifier | None = None
    amount: PositiveAmount
    currency_code: Currency
    to_store_credit: bool


def handle(session: Session, envelope: Envelope, context: Context) -> Outcome:
    refund = parse(RefundPayload, envelope.data, context)
    order = orders.lock_order(session, refund.order_id)
    if order.currency_code and order.currency_code != refund.currency_code:
        raise Rejected(
            f"refund currency {refund.currency_code} differs from order currency"
            f" {order.currency_code}"
        )
    known = session.get(Refund, refund.id)
    if known is not None:
        return Outcome("ignored", f"refund {refund.id} already recorded by event {known.event_id}")
    session.add(
        Refund(
            refund_id=refund.id,
            order_id=refund.order_id,
            customer_id=refund.customer_id,
            amount=refund.amount,
            currency_code=refund.currency_code,
            to_store_credit=refund.to_store_credit,
            event_id=envelope.id,
            created_at=utcnow(),
        )
    )
    session.flush()
    credits = orders.settle_refund_credits(session, order, envelope.id)
    change = orders.settle_earnings(session, order, envelope.id, context.policy)
    outcome = Outcome(detail={"clawed_back": -change})
    if credits:
        outcome.detail["refund_credits"] = [c.__dict__ for c in credits]
    if order.placed_event_id is None:
        outcome.detail["waiting_for_order"] = True
    return outcome
