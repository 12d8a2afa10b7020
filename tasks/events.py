"""``dust.handle_event``: the entry point of every commerce event (queue ``dust.events``).

The worker takes fresh messages of this task in batches (``worker/batching.py``), applied
by :func:`handle_batch` in a few transactions; a retry of a single event runs the task itself.
Both end the same way for an event that cannot be applied now (:func:`settle`): retried
later with backoff, then recorded ``failed``; never dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from dust.models.base import utcnow
from dust.tasks import inbox
from dust.worker import metrics, task_events
from dust.worker.app import app

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
    Strategy="dust.worker.batching:strategy",
)
def handle_event(self: Task, envelope: Any) -> str:
    def retry_later(countdown: int) -> None:
        raise self.retry(countdown=countdown)

    started = time.monotonic()
    result = settle(envelope, self.request.retries, retry_later, self.request.id)
    _settled([result], started, None)
    return result.status


def settle(
    envelope: Any, retries: int, retry_later: Callable[[int], None], delivery: str | None
) -> inbox.Result:
    """Apply one envelope; on a transient error hand it to ``retry_later(countdown)``
    while retries remain, then record it ``failed``. Returns the result; its status is
    the final one, ``duplicate``, or ``retry``."""
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
            return _unsettled(envelope, "retry")
        # Retries ran out, or an unexpected error (a bug): record it as failed so an
        # operator sees it and can replay it once the cause is fixed; never lose it.
        log.exception("event delivery %s failed: %s", delivery, inbox.safe_message(exc))
        try:
            inbox.record_failed(envelope, exc)
        except Exception as again:
            if not inbox.is_transient(again):
                raise
            retry_later(60)
            return _unsettled(envelope, "retry")
        failed = _unsettled(envelope, "failed")
        failed.reason = f"{type(exc).__name__}: {inbox.safe_message(exc)}"
        return failed
    return result


def _unsettled(envelope: Any, status: str) -> inbox.Result:
    parsed = inbox.parse_envelope(envelope, utcnow())
    result = inbox.Result(parsed.event_id, status)
    result.name = parsed.name
    result.occurred_at = parsed.envelope.occurred_at if parsed.envelope else None
    return result


def _settled(results: list[inbox.Result], started: float, batch_id: str | None) -> None:
    """Metrics and one log line per settled event (its id and name, never its payload)."""
    metrics.events_settled(results, started)
    duration_ms = round((time.monotonic() - started) * 1000, 2)
    for result in results:
        fields = {
            "event_id": result.event_id,
            "event_name": result.name,
            "status": result.status,
            "duration_ms": duration_ms,
            "batch_id": batch_id,
        }
        if result.status in ("rejected", "conflict", "needs_attention", "failed"):
            fields["reason"] = result.reason
            log.warning(
                "event %s %s %s: %s",
                result.event_id,
                result.name,
                result.status,
                result.reason,
                extra=fields,
            )
        elif log.isEnabledFor(logging.INFO):
            log.info(
                "event %s %s %s in %.1f ms",
                result.event_id,
                result.name,
                result.status,
                duration_ms,
                extra=fields,
            )


def handle_batch(
    bodies: list[Any], task_ids: list[str] | None = None, batch_id: str | None = None
) -> list[str | None]:
    """Run in a pool process: apply a batch of ``dust.handle_event`` message bodies
    (``[args, kwargs, embed]``; ``task_ids`` their messages' ids). Returns, per message,
    its status when it is settled (applied, refused, recorded, or handed to a later retry:
    it may be acknowledged), None when it is not. Never raises.

    The batch goes through ``inbox.process_batch`` (transactions of at most 0.25 s). If one
    cannot commit (a transient error, or an unexpected one in any event), it is rolled
    back and every event of the batch is applied on its own, exactly as the task applies
    one (those already committed are duplicates there), so one bad event never holds back
    the others.

    Each message gets Celery's ``task_prerun`` before and ``task_postrun`` (and for a
    ``failed`` event ``task_failure``) after, as if ``dust.handle_event`` had run it alone
    (``worker/task_events.py``).
    """
    started = time.monotonic()
    metrics.batch_taken(len(bodies))
    envelopes = [_envelope_of(body) for body in bodies]
    ids = task_ids or [None] * len(bodies)
    signals = task_events.BatchSignals(handle_event, ids, envelopes)
    signals.prerun()
    # Counted and logged as each transaction commits: an event committed before a later
    # transaction of the batch fails comes back below as a duplicate, already counted.
    committed: dict[str, inbox.Result] = {}

    def on_commit(results: list[inbox.Result]) -> None:
        _settled(results, started, batch_id)
        committed.update((r.event_id, r) for r in results if r.status != "duplicate")

    results: list[inbox.Result | None]
    try:
        results = list(inbox.process_batch(envelopes, on_commit=on_commit))
    except Exception as exc:
        if _out_of_time(exc):
            log.error("a batch of %d events ran out of time; requeued", len(bodies))
            results = [None] * len(bodies)
        else:
            log.warning(
                "a batch of %d events could not commit (%s); applying them one by one",
                len(bodies),
                inbox.safe_message(exc),
            )
            results = []
            for envelope in envelopes:
                result = _one_by_one(envelope)
                if result is not None and result.event_id in committed:
                    result = committed[result.event_id]  # settled by this batch already
                elif result is not None:
                    _settled([result], started, batch_id)
                results.append(result)
    statuses = [r.status if r is not None else None for r in results]
    signals.postrun(statuses, [r.reason if r is not None else None for r in results])
    return statuses


def _one_by_one(envelope: Any) -> inbox.Result | None:
    def retry_later(countdown: int) -> None:
        # As Task.retry does: a new message with a countdown, then this one is acked.
        handle_event.apply_async(args=[envelope], countdown=countdown, retries=1)

    try:
        return settle(envelope, 0, retry_later, None)
    except Exception as exc:  # the retry could not be published, the failure not recorded
        if _out_of_time(exc):
            return None
        log.error("event left unacknowledged for redelivery: %s", inbox.safe_message(exc))
        return None


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
