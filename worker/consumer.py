"""The worker's message consumer: Celery's, hardened against messages no client should send.

Celery's consumer trusts a message's headers. A ``task`` header that is not a string
(``TypeError: unhashable type``) stops the worker with "Unrecoverable error", and a missing
``id`` header (``KeyError``) makes it drop its broker connection and take the same message
again, forever. Any producer that can reach the broker could stop event processing with one
message. Here such a message is refused (logged, and removed from the queue) and the
worker goes on; so is a message whose body has the wrong shape (a ``KeyError``,
``TypeError`` or ``ValueError`` while taking it in), instead of reaching the connection loop.

A body that is not valid JSON is recorded in ``dust_events`` as ``rejected`` with the reason
(docs/CONTRACT.md §4.1), then acknowledged as Celery does. Pickle and other content
types stay refused unread (``accept_content``).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer
from vine import promise

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


def _seconds_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


class DustConsumer(Consumer):
    def create_task_handler(self, promise: Any = promise) -> Any:
        handle = super().create_task_handler(promise)
        connection_errors = tuple(self.connection_errors)

        def on_task_received(message: Any) -> Any:
            problem = header_problem(message.headers)
            if problem is not None:
                log.error("refused a message: %s (headers %.300r)", problem, message.headers)
                message.reject_log_error(log, self.connection_errors)
                return None
            try:
                return handle(message)
            except connection_errors:
                raise
            except (KeyError, TypeError, ValueError, AttributeError, IndexError):
                # a message of the wrong shape (a body that is not [args, kwargs, embed],
                # ...); anything else still goes to Celery's connection handling
                log.exception("refused a message that could not be taken in")
                message.reject_log_error(log, self.connection_errors)
                return None

        return on_task_received

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        try:
            from tasks.inbox import record_undecodable

            record_undecodable(message.body, message.content_type, exc)
        except Exception as error:  # the message is still acknowledged: it can never decode
            from tasks.inbox import safe_message

            log.error("could not record an undecodable message: %s", safe_message(error))
        super().on_decode_error(message, exc)
