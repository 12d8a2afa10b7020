"""Many events per database transaction: the worker's strategy for ``dust.handle_event``.

Celery hands every message to the pool on its own: one pool round trip, one transaction,
one commit and one broker ack per event. Here the worker's main process keeps fresh
``dust.handle_event`` messages in a buffer instead and sends them to the pool as one
*batch* (``dust.tasks.events.handle_batch``), which applies them in one transaction (each in
its own savepoint, so a rejected event is still never half-applied). Each message is
acknowledged only after its batch committed; a batch whose pool process dies is put back
on its queue at once (as ``task_reject_on_worker_lost`` does for one task).

Batches size themselves: a message that arrives while a pool process is idle leaves at
once (alone, when the stream is slow: no latency is added); messages that arrive while
every pool process is busy wait in the buffer and leave together when one is free, at most
``DUST_EVENT_BATCH_SIZE`` at a time. The broker's prefetch limit (``worker/app.py``)
leaves room for two batches per pool process.

Exactly-once in effect is the inbox's (``tasks/inbox.py``), unchanged: a batch commits or
rolls back as a whole, and a redelivered message is a duplicate there. Messages this
strategy does not take are left to Celery's own (per-message) strategy: a retry (it carries
``retries`` and an ``eta``), any ``eta`` or ``expires``, and the old message protocol.
``DUST_EVENT_BATCH_SIZE=1`` turns batching off.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery.worker.strategy import default as celery_strategy
from kombu.utils.uuid import uuid

from dust.models.base import utcnow
from dust.worker import dead_letters
from dust.worker.task_events import BatchEvents

log = logging.getLogger("dust.batching")

#: Seconds before a message its batch could not settle (database and broker both out of
#: reach) is put back on its queue: the same pause as the task's retries, not a hot loop.
REQUEUE_DELAY = 5


def strategy(task: Any, app: Any, consumer: Any, **options: Any) -> Any:
    """Celery's hook (``Task.Strategy``): returns the handler of each received message."""
    fallback = celery_strategy(task, app, consumer, **options)
    from dust.worker.settings import get_settings

    size = get_settings().event_batch_size
    if size <= 1:
        return fallback
    batcher = Batcher(app, consumer, size)

    def on_message(
        message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any
    ) -> Any:
        headers = message.headers or {}
        if (
            body is not None
            or "args" in message.payload
            or headers.get("eta")
            or headers.get("expires")
            or headers.get("retries")
        ):
            return fallback(message, body, ack, reject, callbacks, **kw)
        return batcher.take(message, headers)

    return on_message


class Batcher:
    """The buffer of one worker's main process and the batches it has in the pool."""

    def __init__(self, app: Any, consumer: Any, size: int) -> None:
        self.consumer = consumer
        self.size = size
        self.buffer: deque[tuple[Any, Any]] = deque()
        self.in_flight = 0
        self.connection_errors = tuple(consumer.connection_errors)
        self.soft_timeout = app.conf.task_soft_time_limit
        self.timeout = app.conf.task_time_limit
        self.events = BatchEvents(consumer, "dust.handle_event")

    @property
    def slots(self) -> int:
        """Batches the pool runs at once: one per pool process."""
        pool = self.consumer.pool
        return max(1, getattr(pool, "num_processes", None) or pool.limit or 1)

    def take(self, message: Any, headers: dict[str, Any]) -> None:
        if len(message.body or b"") > dead_letters.MAX_MESSAGE_BYTES:
            reason = f"message larger than {dead_letters.MAX_MESSAGE_BYTES} bytes"
            dead_letters.bury_message(message, reason)
            return
        try:
            body = message.decode()
        except Exception as exc:  # not JSON, a forged signature, ...: recorded, acked
            self.consumer.on_decode_error(message, exc)
            return
        raw = message.body if isinstance(message.body, bytes) else None
        self.buffer.append((message, refuse_deep(body, raw)))
        self.events.received(message)
        if self.in_flight < self.slots:
            self.flush()

    def flush(self) -> None:
        """Send the buffer's oldest messages to the pool as one batch."""
        if not self.buffer:
            return
        batch = [self.buffer.popleft() for _ in range(min(self.size, len(self.buffer)))]
        messages = [message for message, _ in batch]
        bodies = [body for _, body in batch]
        ids = [message.headers.get("id", "?") for message in messages]
        batch_id = uuid()
        log.info(
            "events batch %s: %d received %s",
            batch_id[:8],
            len(batch),
            " ".join(ids),
            extra={"batch_id": batch_id, "task_ids": ids},
        )
        self.in_flight += 1
        started = time.monotonic()
        self.events.started(messages)
        from dust.tasks.events import handle_batch

        def on_return(verdicts: Any) -> None:
            self.in_flight -= 1
            self.flush()  # the next batch first: its events have waited, these are done
            statuses = self.settle(batch_id, messages, verdicts, started)
            self.events.finished(messages, statuses, started)

        def on_error(error: Any) -> None:
            # The pool process died (kill -9, OOM, hard time limit). What the batch
            # committed before that is in the inbox, so those events come back as
            # duplicates: every message goes back on its queue now, as
            # task_reject_on_worker_lost does for a single task.
            self.in_flight -= 1
            log.error(
                "events batch %s: pool process lost (%s); %d messages requeued",
                batch_id[:8],
                getattr(error, "exception", error),
                len(messages),
            )
            for message in messages:
                self.requeue(message)
            self.events.lost(messages, getattr(error, "exception", error))
            self.flush()

        try:
            self.consumer.pool.apply_async(
                handle_batch,
                args=(bodies, ids, batch_id),
                callback=on_return,
                error_callback=on_error,
                soft_timeout=self.soft_timeout,
                timeout=self.timeout,
                correlation_id=batch_id,
            )
        except self.connection_errors:
            raise
        except Exception as exc:
            self.in_flight -= 1
            self.not_handed(batch, exc)

    def not_handed(self, batch: list[tuple[Any, Any]], exc: Exception) -> None:
        """The pool refused a batch: something in it cannot be pickled (a body nested too
        deep for the pickler, ...). Each message is sent again alone; one that still
        cannot be is buried in the dead letters. Never requeued as is: it would be
        refused again at once, in a hot loop, holding back the messages fetched with it."""
        problem = f"could not be handed to the pool ({type(exc).__name__}: {str(exc)[:200]})"
        if len(batch) == 1:
            dead_letters.bury_message(batch[0][0], problem)
            return
        log.warning("events batch of %d %s; sending them one by one", len(batch), problem)
        size, self.size = self.size, 1
        try:
            self.buffer.extendleft(reversed(batch))
            for _ in batch:
                self.flush()
        finally:
            self.size = size

    def settle(
        self, batch_id: str, messages: list[Any], verdicts: Any, started: float
    ) -> list[str | None]:
        """Ack what the batch settled (committed, or handed to a later retry: a status);
        put the rest (None) back on the queue for another delivery."""
        if not isinstance(verdicts, list) or len(verdicts) != len(messages):
            log.error("events batch %s: unexpected result %.200r; requeued", batch_id[:8], verdicts)
            verdicts = [None] * len(messages)
        acked = 0
        with acks_together(messages):
            for message, settled in zip(messages, verdicts, strict=True):
                if settled is not None:
                    self.ack(message)
                    acked += 1
                else:  # not even its failure could be recorded: try again a little later
                    self.consumer.timer.call_after(REQUEUE_DELAY, self.requeue, (message,))
        log.info(
            "events batch %s: %d acknowledged, %d requeued in %.1f ms",
            batch_id[:8],
            acked,
            len(messages) - acked,
            (time.monotonic() - started) * 1000,
            extra={
                "batch_id": batch_id,
                "acknowledged": acked,
                "requeued": len(messages) - acked,
                "duration_ms": round((time.monotonic() - started) * 1000, 2),
            },
        )
        return verdicts

    def ack(self, message: Any) -> None:
        try:
            message.ack_log_error(log, self.connection_errors)
        except Exception:  # a message of a channel closed meanwhile: redelivered, a no-op
            log.exception("could not acknowledge a message")

    def requeue(self, message: Any) -> None:
        try:
            message.reject_log_error(log, self.connection_errors, requeue=True)
        except Exception:  # the broker still holds it unacknowledged: redelivered later
            log.exception("could not requeue a message")


def refuse_deep(body: Any, raw: bytes | None = None) -> Any:
    """``body`` as it is, or, when its envelope nests deeper than the inbox takes, the
    inbox's verdict on it (flat, small): refused before it is batched, since pickling it
    for the pool could exhaust the recursion limit (a RecursionError for the whole batch)."""
    from dust.tasks import inbox

    # Fewer brackets in the text than the limit: cannot be that deep (the usual case,
    # counted at C speed; the walk is for the rest).
    if raw is not None and raw.count(b"[") + raw.count(b"{") <= inbox.MAX_DEPTH + 2:
        return body
    if not inbox.too_deep(body, inbox.MAX_DEPTH + 2):  # [args, kwargs, embed] + args
        return body
    from dust.tasks.events import _envelope_of
    from dust.tasks.inbox import parse_envelope

    parsed = parse_envelope(_envelope_of(body), utcnow())
    return [[parsed], {}, {}]


@contextmanager
def acks_together(messages: list[Any]) -> Iterator[None]:
    """Send the acks of a batch's messages in one broker round trip where the transport
    can (``worker/redis_transport.py``); one by one elsewhere. A failed round trip leaves
    them unacknowledged: redelivered later, duplicates for the inbox."""
    qos = getattr(getattr(messages[0], "channel", None), "qos", None) if messages else None
    together = getattr(qos, "acks_together", None)
    if together is None:
        yield
        return
    block = together()
    block.__enter__()
    try:
        yield
    finally:
        try:
            block.__exit__(None, None, None)
        except Exception:
            log.exception("could not acknowledge %d messages; redelivered later", len(messages))
