"""Counting the statements a piece of code sends to the database, by shape: what the
tests of the set-based paths compare (the same statements with or without earn rules,
for a short run or a long one)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from dust.worker import db as worker_db


def shape(statement: str) -> str:
    """A statement reduced to its kind and first table (``SELECT dust_accounts FOR UPDATE``)."""
    flat = " ".join(statement.split())
    verb = flat.split(" ", 1)[0].upper()
    tables = re.findall(r"\b(?:FROM|INTO|UPDATE|JOIN)\s+(dust_\w+)", flat, re.IGNORECASE)
    lock = " FOR UPDATE" if "FOR UPDATE" in flat.upper() else ""
    return f"{verb} {tables[0] if tables else flat[:30]}{lock}"


@contextmanager
def statements() -> Iterator[Counter[str]]:
    """The statements sent to the database meanwhile, by shape."""
    seen: Counter[str] = Counter()
    engine = worker_db.get_engine()

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen[shape(statement)] += 1

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)
