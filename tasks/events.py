"""``dust.handle_event``: the entry point of every commerce event (queue ``dust.events``).

The worker takes fresh messages of this task in batches (``worker/batching.py``), applied
by :func:`handle_batch` in a few transactions; a retry of a single event runs the task itself.
Both end the same way for an event that cannot be applied now (:func:`settle`): retried
later with backoff, then recorded ``failed``; never dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

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
    # Fresh messages are buffered and applied many per transaction (worker/batching.py).
    Strategy="worker.batching:strategy",
)
def handle_event(self: Task, envelope: Any) -> str:
    def retry_later(countdown: int) -> None:
        raise self.retry(countdown=countdown)

    return settle(envelope, self.request.retries, retry_later, self.request.id)


def settle(
    envelope: Any, retries: int, retry_later: Callable[[int], None], delivery: str | None
) -> str:
    """Apply one envelope; on a transient error hand it to ``retry_later(countdown)``
    while retries remain, then record it ``failed``. Returns the final status."""
    try:
        result = inbox.process(envelope)
    except Exception as exc:
        if _out_of_time(exc):
            raise
        transient = inbox.is_transient(exc)
        if transient and retries < MAX_RETRIES:
            log.warning(
                "event delivery %s hit a transient error (%s); retry %d",
                delivery,
                inbox.safe_message(exc),
                retries + 1,
            )
            retry_later(backoff(retries))
            return "retry"
        # Retries ran out, or an unexpected error (a bug): record it as failed so an
        # operator sees it and can replay it once the cause is fixed; never lose it.
        log.exception("event delivery %s failed: %s", delivery, inbox.safe_message(exc))
        try:
            inbox.record_failed(envelope, exc)
        except Exception as again:
            if not inbox.is_transient(again):
                raise
            retry_later(60)
            return "retry"
        return "failed"
    if result.status in ("rejected", "conflict"):
        log.warning("event %s %s: %s", result.event_id, result.status, result.reason)
    return result.status


def handle_batch(bodies: list[Any]) -> list[bool]:
    """Run in a pool process: apply a batch of ``dust.handle_event`` message bodies
    (``[args, kwargs, embed]``). Returns, per message, whether it is settled (applied,
    refused, recorded, or handed to a later retry) and may be acknowledged. Never raises.

    The batch goes through ``inbox.process_batch`` (transactions of at most 0.25 s). If one
    cannot commit (a transient error, or an unexpected one in any event), it is rolled
    back and every event of the batch is applied on its own, exactly as the task applies
    one (those already committed are duplicates there), so one bad event never holds back
    the others.
    """
    envelopes = [_envelope_of(body) for body in bodies]
    try:
        results = inbox.process_batch(envelopes)
    except Exception as exc:
        if _out_of_time(exc):
            log.error("a batch of %d events ran out of time; requeued", len(bodies))
            return [False] * len(bodies)
        log.warning(
            "a batch of %d events could not commit (%s); applying them one by one",
            len(bodies),
            inbox.safe_message(exc),
        )
    else:
        for result in results:
            if result.status in ("rejected", "conflict"):
                log.warning("event %s %s: %s", result.event_id, result.status, result.reason)
        return [True] * len(bodies)
    return [_one_by_one(envelope) for envelope in envelopes]


def _one_by_one(envelope: Any) -> bool:
    def retry_later(countdown: int) -> None:
        # As Task.retry does: a new message with a countdown, then this one is acked.
        handle_event.apply_async(args=[envelope], countdown=countdown, retries=1)

    try:
        settle(envelope, 0, retry_later, None)
    except Exception as exc:  # the retry could not be published, the failure not recorded
        if _out_of_time(exc):
            return False
        log.error("event left unacknowledged for redelivery: %s", inbox.safe_message(exc))
        return False
    return True


def _out_of_time(exc: BaseException) -> bool:
    """The soft time limit, raised as is or wrapped by SQLAlchemy mid-statement."""
    return isinstance(exc, SoftTimeLimitExceeded) or isinstance(
        getattr(exc, "orig", None), SoftTimeLimitExceeded
    )


def _envelope_of(body: Any) -> Any:
    """The envelope of a ``[args, kwargs, embed]`` body; a body of another shape becomes
    an envelope the inbox records ``rejected`` with the reason."""
    if (
        isinstance(body, list | tuple)
        and len(body) == 3
        and isinstance(body[0], list | tuple)
        and len(body[0]) == 1
        and not body[1]
    ):
        return body[0][0]
    return inbox.Malformed(
        body, "dust.handle_event takes exactly one argument, the envelope (docs/CONTRACT.md §3.1)"
    )
