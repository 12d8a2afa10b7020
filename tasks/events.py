"""``dust.handle_event``: the entry point of every commerce event (queue ``dust.events``)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from tasks import inbox
from worker.app import app

log = logging.getLogger(__name__)

#: Transient failures are retried this many times with backoff before ``failed``.
MAX_RETRIES = 5


def backoff(retries: int) -> int:
    """2, 4, 8, 16, 32 seconds: short, since ETAs on Redis wait inside the worker."""
    return min(2 ** (retries + 1), 60)


@app.task(
    name="dust.handle_event",
    bind=True,
    ignore_result=True,
    max_retries=None,
    # If even recording the failure is impossible (database down), leave the message
    # unacknowledged rather than drop it: the broker hands it out again.
    acks_on_failure_or_timeout=False,
)
def handle_event(self: Task, envelope: Any) -> str:
    try:
        result = inbox.process(envelope)
    except Exception as exc:
        transient = inbox.is_transient(exc)
        if transient and self.request.retries < MAX_RETRIES:
            log.warning(
                "event delivery %s hit a transient error (%s); retry %d",
                self.request.id,
                inbox.safe_message(exc),
                self.request.retries + 1,
            )
            raise self.retry(countdown=backoff(self.request.retries)) from None
        # Retries ran out, or an unexpected error (a bug): record it as failed so an
        # operator sees it and can replay it once the cause is fixed; never lose it.
        log.exception("event delivery %s failed: %s", self.request.id, inbox.safe_message(exc))
        try:
            inbox.record_failed(envelope, exc)
        except Exception as again:
            if not inbox.is_transient(again):
                raise
            raise self.retry(countdown=60) from None
        return "failed"
    if result.status in ("rejected", "conflict"):
        log.warning("event %s %s: %s", result.event_id, result.status, result.reason)
    return result.status
