"""The base class of every Dust task: its transaction, its retries, its reply.

``DustTask`` (``@app.task(base=...)``) owns what each task body used to do by hand:

- **the session scope**: ``self.transaction(work)`` runs ``work(session)`` in one
  transaction (``worker/db.py``, ``session_scope``), committed when it returns, rolled back
  when it raises;
- **the one retry policy of a transient error** (a lost connection, a serialization
  failure or deadlock, SQLite busy, a unique-key race: ``worker/errors.py``): first a few
  quick retries in place, inside the same delivery (``retry_conflicts``); then, for a task
  whose caller does not wait on it, a new delivery after ``backoff(n)`` seconds, at most
  ``transient_retries`` times (``self.retry_if_transient``); then the task's own final
  answer (the event recorded ``failed``, the run failed, an error reply);
- **the reply shape** of its family: ``refuse`` (invalid arguments) and ``error``.

The families differ only in their reply and in how many later deliveries a transient error
gets: ``EventTask`` and ``JobTask`` (nobody waits on them), ``AdminTask`` (an operator
waits up to a minute), ``RequestTask`` (a checkout waits: quick retries in place only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from celery import Task
from pydantic import ValidationError
from sqlalchemy.orm import Session

from dust.ledger.errors import LedgerError
from dust.subscribers.base import describe
from dust.worker.db import session_scope
from dust.worker.errors import is_transient, retry_conflicts, safe_message

T = TypeVar("T")

#: Longest wait before a transient error's next delivery (seconds).
MAX_BACKOFF = 60


def backoff(retries: int) -> int:
    """Seconds before the next delivery after ``retries`` earlier ones: 2, 4, 8, 16, 32,
    then 60 (short: an ETA on Redis waits inside the worker)."""
    return min(2 ** (retries + 1), MAX_BACKOFF)


class DustTask(Task):
    """A Dust task. Subclasses choose the reply shape and ``transient_retries``."""

    #: Later deliveries a transient error gets after the quick retries in place.
    transient_retries = 5
    # Dust counts its own retries (``transient_retries``); Celery's cap stays out of it.
    max_retries = None

    def transaction(self, work: Callable[[Session], T], *, read_only: bool = False) -> T:
        """``work(session)`` in one transaction, retried in place on a transient error."""

        def once() -> T:
            with session_scope(read_only=read_only) as session:
                return work(session)

        return retry_conflicts(once)()

    def retries_left(self) -> bool:
        return bool(self.request.retries < self.transient_retries)

    def retry_if_transient(self, exc: BaseException, **options: Any) -> None:
        """Hand ``exc`` to a later delivery when it is transient and retries remain
        (raises Celery's ``Retry``); return otherwise, for the task's final answer."""
        if is_transient(exc) and self.retries_left():
            raise self.retry(countdown=backoff(self.request.retries), **options) from None

    # -- replies ---------------------------------------------------------------------------

    def error(self, reason: str, **extra: Any) -> dict[str, Any]:
        return {"status": "error", "reason": reason, **extra}

    def refuse(self, exc: ValidationError) -> dict[str, Any]:
        """The reply to arguments that do not validate (nothing was done)."""
        raise NotImplementedError


class EventTask(DustTask):
    """``dust.handle_event``: settled by the inbox; its reply is the event's status."""


class JobTask(DustTask):
    """A scheduled job's step; its reply is what happened to the run."""


class RequestTask(DustTask):
    """A checkout request (``dust.reserve`` ...): the caller waits for the reply, so a
    transient error gets the quick retries in place only, then fails the call."""

    transient_retries = 0

    def refuse(self, exc: ValidationError) -> dict[str, Any]:
        return {"status": "rejected", "reason": "invalid_request", "detail": describe(exc)}


class AdminTask(DustTask):
    """An admin one-off (``dust.admin.*``): ``{"status": "ok", ...}`` or
    ``{"status": "error", "reason": ...}``. A business error (a ``LedgerError``) is a
    reply, never an exception, and its transaction is rolled back: nothing changed."""

    #: An operator waits up to a minute (cli/common.py REPLY_TIMEOUT): 2 + 4 + 8 s.
    transient_retries = 3

    def refuse(self, exc: ValidationError) -> dict[str, Any]:
        problems = []
        for item in exc.errors()[:3]:
            where = ".".join(str(p) for p in item["loc"])
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        return self.error("invalid request: " + "; ".join(problems))

    def reply(self, work: Callable[[Session], dict[str, Any]]) -> dict[str, Any]:
        """``work(session)`` in one transaction: its reply, or the error reply of a
        business error; a transient error goes to a later delivery, then is reported."""
        try:
            return self.transaction(work)
        except LedgerError as exc:
            return self.error(str(exc))
        except Exception as exc:
            if not is_transient(exc):
                raise
            self.retry_if_transient(exc)
            return self.error(f"the database refused it, nothing changed: {safe_message(exc)}")
