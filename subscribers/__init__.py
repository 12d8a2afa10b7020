"""One module per commerce event (docs/CONTRACT.md §3.3). ``SUBSCRIBERS`` maps event names to their
handler; a name not in it is recorded as ``ignored``. ``BULK_SUBSCRIBERS`` maps the names
whose events a batch may also apply many at a time, set-based (``dust.tasks.inbox``)."""

from __future__ import annotations

from dust.subscribers import (
    customer_created,
    order_canceled,
    order_placed,
    product_updated,
    refund_created,
)
from dust.subscribers.base import BulkHandler, Handler

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
