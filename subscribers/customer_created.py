"""``customer.created`` / ``customer.updated``: open the customer's accounts, record the
customer's groups (``group_ids``, as of the event's ``occurred_at``) and credit the welcome
bonus (``customer.created`` only) when an earn rule gives one (``dust.ledger.rules``)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from dust.ledger import rules
from dust.ledger.accounts import ensure_account
from dust.models.tables import DUST, STORE_CREDIT
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


class CustomerPayload(Payload):
    id: Identifier
    email: str | None = None
    #: The customer's groups; absent or null: unchanged (nothing recorded).
    group_ids: list[Identifier] | None = None


def handle(session: Session, envelope: Envelope, context: Context) -> Outcome:
    customer = parse(CustomerPayload, envelope.data, context)
    ensure_account(session, customer.id, DUST)
    if context.default_currency:
        ensure_account(session, customer.id, STORE_CREDIT, context.default_currency)
    outcome = Outcome()
    if customer.group_ids is not None:
        changed = rules.record_groups(
            session,
            customer.id,
            customer.group_ids,
            envelope.occurred_at,
            envelope.id,
            context.policy,
        )
        if changed:
            outcome.detail["regrouped_orders"] = changed
    if envelope.name == "customer.created":
        bonus = rules.credit_welcome(
            session, customer.id, envelope.occurred_at, envelope.id, context.policy
        )
        if bonus:
            outcome.detail["welcome_bonus"] = bonus
    return outcome


def touched(envelope: Envelope, context: Context) -> Touches | None:
    payload = valid(CustomerPayload, envelope, context)
    return None if payload is None else Touches(customer_id=payload.id)
