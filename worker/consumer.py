"""The worker's message consumer: Celery's, hardened against messages no client should send.

Celery's consumer trusts a message's headers. A ``task`` header that is not a string
(``TypeError: unhashable type``) stops the worker with "Unrecoverable error", and a missing
``id`` header (``KeyError``) makes it drop its broker connection and take the same message
again, forever. Any producer that can reach the broker could stop event processing with one
message. Here such a message is refused (logged, and removed from the queue) and the
worker goes on; so is a message whose body has the wrong shape (a ``KeyError``,
``TypeError`` or ``ValueError`` while taking it in) or cannot be handed to the pool (a
``RecursionError`` or pickling error), instead of reaching the connection loop. A refused
message is moved, as received, to the dead letters (``worker/dead_letters.py``) with the
reason, then acknowledged.

A body that is not valid JSON is recorded in ``dust_events`` as ``rejected`` with the reason
(docs/CONTRACT.md §4.1), then acknowledged as Celery does. Pickle and other content
types stay refused unread (``accept_content``).
"""

from __future__ import annotations

import logging
from pickle import PicklingError
from typing import Any

from celery.worker.consumer import Consumer
from vine import promise

from dust.worker.dead_letters import bury_message

log = logging.getLogger(__name__)


def header_problem(headers: Any) -> str | None:
    """Why a message's headers cannot be a task message, or None when they can."""
    if not isinstance(headers, dict) or "task" not in headers:
        return None  # no headers, or protocol 1: Celery's own checks refuse what is wrong
    if not isinstance(headers["task"], str) or not headers["task"]:
        return "the task header is not a task name"
    if not isinstance(headers.get("id"), str) or not headers["id"]:
        return "the id header is missing or not a string"
    # Celery hands these to the pool unchecked; a string time limit upsets its bookkeeping
    timelimit = headers.get("timelimit")
    if timelimit is not None and not (
        isinstance(timelimit, list | tuple)
        and len(timelimit) == 2
        and all(_seconds_or_none(limit) for limit in timelimit)
    ):
        return "the timelimit header is not [soft, hard] seconds"
    retries = headers.get("retries")
    if retries is not None and (not isinstance(retries, int) or isinstance(retries, bool)):
        return "the retries header is not a whole number"
    return None


def _bury_on_reject(message: Any, reason: str) -> None:
    """Have Celery's reject of ``message`` bury it in the dead letters (and ack it)."""

    def reject_log_error(*_: Any, **__: Any) -> None:
        bury_message(message, reason)

    message.reject_log_error = reject_log_error


def _seconds_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


class DustConsumer(Consumer):
    def create_task_handler(self, promise: Any = promise) -> Any:
        handle = super().create_task_handler(promise)
        connection_errors = tuple(self.connection_errors)

        def on_task_received(message: Any) -> Any:
            problem = header_problem(message.headers)
            if problem is not None:  # logged once, by the burial
                bury_message(message, f"not a Celery task message: {problem}")
                return None
            try:
                return handle(message)
            except connection_errors:
                raise
            except (
                KeyError,
                TypeError,
                ValueError,
                AttributeError,
                IndexError,
                RecursionError,
                PicklingError,
            ) as exc:
                # a message of the wrong shape (a body that is not [args, kwargs, embed],
                # ...) or that the pool cannot take; anything else still goes to Celery's
                # connection handling
                log.debug("a message could not be taken in", exc_info=True)
                bury_message(message, f"could not be taken in ({type(exc).__name__}: {exc!s:.200})")
                return None

        return on_task_received

    # Celery rejects (drops) a message of a task no one registered, of an unknown format or
    # that it finds invalid. On Dust's queues such a message is no Dust task: it goes to
    # the dead letters as received, where an operator can see it, instead of vanishing.
    def on_unknown_message(self, body: Any, message: Any) -> None:
        _bury_on_reject(message, "not a Celery task message (unknown format)")
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        _bury_on_reject(message, f"no such task: {exc!s:.200}")
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        _bury_on_reject(message, f"invalid task message: {exc!s:.200}")
        super().on_invalid_task(body, message, exc)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        try:
            from dust.tasks.inbox import record_undecodable

            record_undecodable(message.body, message.content_type, exc)
        except Exception as error:  # the message is still acknowledged: it can never decode
            from dust.tasks.inbox import safe_message

            log.error("could not record an undecodable message: %s", safe_message(error))
        super().on_decode_error(message, exc)
