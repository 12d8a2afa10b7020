"""Errors as Dust reports and retries them: messages with no secret in them, and which
database errors are transient (worth the same work again)."""

from __future__ import annotations

import re

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential


def safe_message(error: BaseException) -> str:
    """An error message with no connection string or parameters in it."""
    source = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    lines = str(source).strip().splitlines()
    text = lines[0].strip() if lines else type(error).__name__
    return scrub(text)[:500]


def scrub(text: str) -> str:
    """``scheme://user:password@host`` with the credentials masked, wherever it appears."""
    return re.sub(r"(\w+://)[^@\s/]*@", r"\1***@", text)


def is_transient(exc: BaseException) -> bool:
    """Errors worth trying again: lost connections, serialization failures, deadlocks,
    SQLite busy, and unique-key races between two workers."""
    if isinstance(exc, OperationalError | IntegrityError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


#: Quick retries inside one delivery, for conflicts between concurrent transactions.
retry_conflicts = retry(
    retry=retry_if_exception(is_transient),
    stop=stop_after_attempt(6),
    wait=wait_random_exponential(multiplier=0.02, max=1),
    reraise=True,
)
