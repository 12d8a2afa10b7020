"""``product.created`` / ``product.updated``: record the product's dust settings.

The settings of the latest ``occurred_at`` win, so an older update delivered late does not
overwrite a newer one.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from dust.models import Product
from dust.models.base import utcnow
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
    row = session.get(Product, product.id, with_for_update=True)
    if row is None:
        row = Product(product_id=product.id)
        session.add(row)
    elif row.occurred_at > envelope.occurred_at:
        return Outcome("ignored", f"older than the settings recorded at {row.occurred_at}")
    row.dust_only = settings.dust_only
    row.dust_price = settings.dust_price
    row.occurred_at = envelope.occurred_at
    row.event_id = envelope.id
    row.updated_at = utcnow()
    return Outcome()
