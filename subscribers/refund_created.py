"""``refund.created``: refund money to store credit, give back dust paid for returned
items, and claw back the dust the refund unearned.

After all refunds, the order's net earned dust is
``floor(max(0, base_without_refunds − refunded_total) × rate)`` (``dust.ledger.earning``). A
refund that arrives before its order is remembered, and checked and applied when the
order arrives. A refund that would take the order's refunds past its caps (money: what
it was paid in money and store credit; dust: what it charged) is ``needs_attention``,
nothing credited and nothing clawed back.
"""

from __future__ import annotations

from pydantic import model_validator
from sqlalchemy.orm import Session

from dust.ledger import charging, orders
from dust.models import Refund
from dust.models.base import utcnow
from dust.subscribers.base import (
    Amount,
    Context,
    Currency,
    Envelope,
    Identifier,
    Outcome,
    Payload,
    Rejected,
    Touches,
    parse,
    valid,
)


class RefundPayload(Payload):
    id: Identifier
    order_id: Identifier
    customer_id: Identifier | None = None
    #: Money refunded; 0 when the refund only gives dust back.
    amount: Amount
    currency_code: Currency
    to_store_credit: bool
    #: Dust given back for returned items that were paid with dust.
    dust_amount: Amount = 0

    @model_validator(mode="after")
    def _refunds_something(self) -> RefundPayload:
        if self.amount == 0 and self.dust_amount == 0:
            raise ValueError("amount or dust_amount must be above 0")
        return self


def handle(session: Session, envelope: Envelope, context: Context) -> Outcome:
    refund = parse(RefundPayload, envelope.data, context)
    order = orders.lock_order(session, refund.order_id)
    if order.currency_code and order.currency_code != refund.currency_code:
        raise Rejected(
            f"refund currency {refund.currency_code} differs from order currency"
            f" {order.currency_code}"
        )
    known = orders.find_refund(session, refund.id)
    if known is not None:
        if known.event_id == envelope.id and known.status == "held":
            # An explicit replay of a held refund: still held until an admin acts.
            return Outcome("needs_attention", known.held_reason)
        return Outcome("ignored", f"refund {refund.id} already recorded by event {known.event_id}")
    orders.add_refund(
        session,
        Refund(
            refund_id=refund.id,
            order_id=refund.order_id,
            customer_id=refund.customer_id,
            amount=refund.amount,
            currency_code=refund.currency_code,
            to_store_credit=refund.to_store_credit,
            dust_amount=refund.dust_amount,
            dust_returned=0,
            status="waiting",
            event_id=envelope.id,
            created_at=utcnow(),
        ),
    )
    settled = charging.settle_refunds(session, order, envelope.id)
    if refund.id in settled.held:
        return Outcome("needs_attention", settled.held[refund.id], {"held": True})
    change = orders.settle_earnings(session, order, envelope.id, context.policy)
    outcome = Outcome(detail={"clawed_back": -change})
    if settled.credits:
        outcome.detail["refund_credits"] = [c.__dict__ for c in settled.credits]
    if settled.dust_returned:
        outcome.detail["dust_returned"] = settled.dust_returned
    if order.placed_event_id is None:
        outcome.detail["waiting_for_order"] = True
    return outcome


def touched(envelope: Envelope, context: Context) -> Touches | None:
    # Not the refund's customer: a refund opens no dust account.
    payload = valid(RefundPayload, envelope, context)
    return (
        None
        if payload is None
        else Touches(
            order_id=payload.order_id,
            customer_id=payload.customer_id,
            refund_id=payload.id,
            draws=True,
        )
    )
