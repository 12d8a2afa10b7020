"""``product.created`` / ``product.updated``: record the product's dust settings
(``ledger/products.py``: the settings of the latest ``occurred_at`` win)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from dust.ledger import products
from dust.subscribers.base import Amount, Context, Envelope, Identifier, Outcome, Payload, parse


class DustMetadata(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    dust_only: bool = False
    dust_price: Amount | None = None


class ProductPayload(Payload):
    id: Identifier
    metadata: DustMetadata | None = None


def handle(session: Session, envelope: Envelope, context: Context) -> Outcome:
    product = parse(ProductPayload, envelope.data, context)
    settings = product.metadata or DustMetadata()
    newer = products.record_event(
        session,
        product.id,
        dust_only=settings.dust_only,
        dust_price=settings.dust_price,
        occurred_at=envelope.occurred_at,
        event_id=envelope.id,
    )
    if newer is not None:
        return Outcome("ignored", f"older than the settings recorded at {newer}")
    return Outcome()
