"""The one reading of an instant an operator types (``dust`` options such as ``--as-of``,
``--since``, ``--until``, ``--starts``, ``--ends``, ``--at``; docs/CONTRACT.md).

Two forms, both in UTC unless they say otherwise:

- a date, ``2026-11-20``: midnight UTC that day;
- an ISO 8601 date and time, ``2026-11-20T10:00:00Z``, ``2026-11-20T10:00+01:00``
  (``Z`` or ``z`` for UTC; seconds and fractions optional). Without an offset
  (``2026-11-20T10:00``) it is UTC, as everything Dust stores and prints is: never the
  machine's local zone, so the same text names the same instant on every machine.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
EXAMPLES = "e.g. 2026-11-20 or 2026-11-20T10:00:00Z"


class NotAnInstant(ValueError):
    """Text that is not one of the two forms; its message says why."""


def parse_instant(text: str) -> datetime:
    """The instant ``text`` names, in UTC; :class:`NotAnInstant` when it names none."""
    stripped = text.strip()
    try:
        if DATE.fullmatch(stripped):
            day = date.fromisoformat(stripped)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        instant = datetime.fromisoformat(stripped.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise NotAnInstant(f"{text!r} is not a date or an ISO 8601 instant ({EXAMPLES})") from None
    if instant.tzinfo is None:
        return instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC)
