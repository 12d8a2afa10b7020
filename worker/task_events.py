"""Batched events, seen by Celery's own tooling as if each message had run alone.

``worker/batching.py`` hands ``dust.handle_event`` messages to the pool as batches, past
Celery's request machinery, which is what sends a task's events (Flower, ``celery
events``, celery-exporter) and its signals (OpenTelemetry's and other integrations hook
``task_prerun`` / ``task_postrun`` / ``task_failure``). Here both are sent per message,
with the fields Celery itself sends:

* main process (:class:`BatchEvents`), when task events are enabled (``celery worker -E``
  or ``worker_send_task_events``): ``task-received`` as a message is taken,
  ``task-started`` as its batch goes to the pool, then ``task-succeeded`` (result: the
  event's status), ``task-failed`` (recorded ``failed``, or the message requeued because
  its batch could not settle it; ``exception`` says which);
* pool process (:class:`BatchSignals`): ``task_prerun`` before the batch, then
  ``task_postrun`` (``state`` SUCCESS, or FAILURE for a ``failed`` event, after a
  ``task_failure`` naming it). While a message's signal is sent, ``task.request`` is that
  message's (``id``, ``args``), as it is for a task run alone.

Celery's own per-message path (a retry, an ``eta``) sends all of this itself.
"""

from __future__ import annotations

import time
from typing import Any

from celery import signals
from celery.utils.saferepr import saferepr


def listened() -> bool:
    """Whether anything besides Dust's own metrics (which count requests and jobs only)
    listens to the task signals: sending them per message costs ~0.1 ms, not spent for no one."""
    from dust.worker.metrics import own_receiver

    return any(
        not own_receiver(key[0])
        for signal in (signals.task_prerun, signals.task_postrun, signals.task_failure)
        for key, _ in signal.receivers
    )


class EventFailed(Exception):
    """What ``task_failure`` carries for an event recorded ``failed`` (its reason)."""


class BatchSignals:
    """The signals of one batch's messages, sent in the pool process."""

    def __init__(self, task: Any, task_ids: list[str | None], envelopes: list[Any]) -> None:
        self.task = task
        self.ids = task_ids
        self.envelopes = envelopes
        self.wanted = listened()

    def _each(self) -> Any:
        for task_id, envelope in zip(self.ids, self.envelopes, strict=True):
            if task_id is None:
                continue
            self.task.push_request(id=task_id, args=[envelope], kwargs={}, retries=0)
            try:
                yield task_id, [envelope]
            finally:
                self.task.pop_request()

    def prerun(self) -> None:
        if not self.wanted:
            return
        for task_id, args in self._each():
            signals.task_prerun.send(
                sender=self.task, task_id=task_id, task=self.task, args=args, kwargs={}
            )

    def postrun(self, statuses: list[str | None], reasons: list[str | None]) -> None:
        if not self.wanted:
            return
        for (task_id, args), status, reason in zip(self._each(), statuses, reasons, strict=False):
            state = "SUCCESS"
            if status == "failed" or status is None:
                state = "FAILURE"
                exc = EventFailed(reason or "not settled: requeued for another delivery")
                signals.task_failure.send(
                    sender=self.task,
                    task_id=task_id,
                    exception=exc,
                    args=args,
                    kwargs={},
                    traceback=None,
                    einfo=None,
                )
            signals.task_postrun.send(
                sender=self.task,
                task_id=task_id,
                task=self.task,
                args=args,
                kwargs={},
                retval=status,
                state=state,
            )


class BatchEvents:
    """The task events of batched messages, sent by the worker's main process."""

    def __init__(self, consumer: Any, task_name: str) -> None:
        self.consumer = consumer
        self.task_name = task_name

    @property
    def eventer(self) -> Any:
        return getattr(self.consumer, "event_dispatcher", None)

    @property
    def enabled(self) -> bool:
        # Read each time: `celery control enable_events` turns events on at runtime.
        eventer = self.eventer
        return bool(eventer is not None and eventer.enabled)

    def _send(self, kind: str, message: Any, **fields: Any) -> None:
        task_id = message.headers.get("id")
        if task_id:
            self.eventer.send(kind, uuid=task_id, **fields)

    def received(self, message: Any) -> None:
        if not self.enabled:
            return
        headers = message.headers
        self._send(
            "task-received",
            message,
            name=self.task_name,
            args=headers.get("argsrepr") or "",
            kwargs=headers.get("kwargsrepr") or "{}",
            root_id=headers.get("root_id"),
            parent_id=headers.get("parent_id"),
            retries=headers.get("retries", 0) or 0,
            eta=None,
            expires=None,
        )

    def started(self, messages: list[Any]) -> None:
        if not self.enabled:
            return
        for message in messages:
            self._send("task-started", message)

    def finished(self, messages: list[Any], statuses: list[Any], started: float) -> None:
        if not self.enabled:
            return
        runtime = time.monotonic() - started
        for message, status in zip(messages, statuses, strict=False):
            if status is None:
                self._send(
                    "task-failed",
                    message,
                    exception=saferepr(EventFailed("not settled: requeued")),
                    traceback="",
                )
            elif status == "failed":
                self._send(
                    "task-failed",
                    message,
                    exception=saferepr(EventFailed("recorded failed: replay it")),
                    traceback="",
                )
            else:
                self._send("task-succeeded", message, result=saferepr(status), runtime=runtime)

    def lost(self, messages: list[Any], error: Any) -> None:
        if not self.enabled:
            return
        for message in messages:
            self._send(
                "task-failed",
                message,
                exception=saferepr(EventFailed(f"pool process lost: {error}")),
                traceback="",
            )
