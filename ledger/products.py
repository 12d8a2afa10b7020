"""Product dust settings (``dust_products``): the one writer of its rows.

Two sources set them: ``product.created`` / ``product.updated`` events (the settings of
the latest ``occurred_at`` win, so an older update delivered late does not overwrite a
newer one) and an operator (``dust products set``: what is given counts as of now; a
product event that occurred later replaces it, an older one delivered late does not).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from dust.models import Product
from dust.models.base import utcnow


def _locked(session: Session, product_id: str) -> tuple[Product, bool]:
    """The product's row, locked (a new one added when there is none), and whether it is new."""
    row = session.get(Product, product_id, with_for_update=True)
    if row is None:
        row = Product(product_id=product_id, dust_only=False, dust_price=None)
        session.add(row)
        return row, True
    return row, False


def record_event(
    session: Session,
    product_id: str,
    *,
    dust_only: bool,
    dust_price: int | None,
    occurred_at: datetime,
    event_id: str,
) -> datetime | None:
    """Record the settings a product event carries. Returns None when recorded, or the
    ``occurred_at`` of the newer settings that make this event too old to count."""
    row, created = _locked(session, product_id)
    if not created and row.occurred_at > occurred_at:
        return row.occurred_at
    row.dust_only = dust_only
    row.dust_price = dust_price
    row.occurred_at = occurred_at
    row.event_id = event_id
    row.updated_at = utcnow()
    return None


def set_by_operator(
    session: Session,
    product_id: str,
    *,
    actor: str,
    dust_only: bool | None = None,
    dust_price: int | None = None,
    clear_dust_price: bool = False,
) -> tuple[Product, bool]:
    """Set what is given of a product's settings, as of now; returns the row and whether
    it was created."""
    row, created = _locked(session, product_id)
    if dust_only is not None:
        row.dust_only = dust_only
    if dust_price is not None:
        row.dust_price = dust_price
    if clear_dust_price:
        row.dust_price = None
    now = utcnow()
    row.occurred_at = now
    row.updated_at = now
    # No event set these settings; record who did instead.
    row.event_id = f"admin:{actor}"[:250]
    session.flush()
    return row, created


def product_json(row: Product) -> dict[str, Any]:
    """A product's settings as ``dust products list --json`` and ``dust.admin.set_product``
    show them (docs/CONTRACT.md)."""
    return {
        "product_id": row.product_id,
        "dust_only": row.dust_only,
        "dust_price": row.dust_price,
        "occurred_at": row.occurred_at.isoformat(),
        "set_by": row.event_id,
        "updated_at": row.updated_at.isoformat(),
    }
