"""``customer.created`` / ``customer.updated``: open the customer's accounts."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ledger.accounts import ensure_account
from models.tables import DUST, STORE_CREDIT
from subscribers.base import Context, Envelope, Identifier, Outcome, Payload, parse


class CustomerPayload(Payload):
    id: Identifier
    email: str | None = None
    group_ids: list[Identifier] | None = None


def handle(session: Session, envelope: Envelope, context: Context) -> Outcome:
    customer = parse(CustomerPayload, envelope.data, context)
    ensure_account(session, customer.id, DUST)
    if context.default_currency:
        ensure_account(session, customer.id, STORE_CREDIT, context.default_currency)
    return Outcome()
