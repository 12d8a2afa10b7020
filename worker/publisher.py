"""Publishing envelopes as ``dust.handle_event`` messages (what any Celery client does)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from worker.app import EVENTS_QUEUE, app


def publish_envelopes(envelopes: Iterable[Any]) -> int:
    """Send each envelope on ``dust.events`` over one broker connection."""
    count = 0
    with app.producer_or_acquire() as producer:
        for envelope in envelopes:
            app.send_task(
                "dust.handle_event", args=[envelope], queue=EVENTS_QUEUE, producer=producer
            )
            count += 1
    return count
