"""Publishing envelopes as ``dust.handle_event`` messages (what any Celery client does)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dust.worker.app import EVENTS_QUEUE, app


def publish_envelopes(envelopes: Iterable[Any]) -> int:
    """Send each envelope on ``dust.events`` over one broker connection."""
    count = 0
    with app.producer_or_acquire() as producer:
        for envelope in envelopes:
            # No reply is ever sent for an event: do not subscribe to one (with Redis down,
            # waiting to subscribe turned a one-line error into half a minute of retries).
            app.send_task(
                "dust.handle_event",
                args=[envelope],
                queue=EVENTS_QUEUE,
                producer=producer,
                ignore_result=True,
            )
            count += 1
    return count
