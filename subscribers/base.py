"""What every subscriber shares: the envelope, the context it runs in, its outcome.

A subscriber is a plain function ``handle(session, envelope, context) -> Outcome``. It
validates its payload (a pydantic model), records what the event says and asks the ledger
for the entries. It never commits and knows nothing of Celery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from sqlalchemy.orm import Session

from ledger.orders import EarnPolicy

#: Largest amount accepted in an event: far above any real order, far below BIGINT.
MAX_AMOUNT = 10**15

#: Ids are stored in text columns: no control characters (PostgreSQL text cannot hold NUL).
Identifier = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=200, strip_whitespace=True, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]
Amount = Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)]
PositiveAmount = Annotated[int, Field(strict=True, gt=0, le=MAX_AMOUNT)]
Currency = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z]{3}$", to_lower=True, strip_whitespace=True)
]


class Payload(BaseModel):
    """Base of every event payload: strict types, extra fields allowed and ignored."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


P = TypeVar("P", bound=Payload)


class Rejected(Exception):
    """The event is malformed or contradicts what is recorded: never retried."""


@dataclass(frozen=True)
class Envelope:
    id: str
    name: str
    occurred_at: datetime
    data: dict[str, Any]


@dataclass(frozen=True)
class Context:
    """Settings a subscriber needs, read once per process by the task layer."""

    earn_rate: Callable[[str], Decimal]
    #: Minor units of a currency one dust is worth (``DUST_REDEEM_VALUES``).
    redeem_value: Callable[[str], Decimal]
    policy: EarnPolicy
    default_currency: str | None
    hold_ttl_seconds: int


@dataclass
class Outcome:
    status: str = "processed"  # processed | ignored | needs_attention
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def parse(model: type[P], data: dict[str, Any]) -> P:
    """Validate ``data`` into ``model`` or raise :class:`Rejected` with a readable reason."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Rejected(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "payload"
        problems.append(f"{where}: {error['msg']}")
    return "invalid payload: " + "; ".join(problems)


Handler = Callable[[Session, Envelope, Context], Outcome]


@dataclass(frozen=True)
class Prepared:
    """The first events of a run that a subscriber applies together (``BULK_SUBSCRIBERS``):
    their outcomes, known before anything is written, one per event taken, and ``apply``,
    which writes them all and returns False when the database turned out not to allow it
    (the caller then rolls back and applies them one at a time)."""

    outcomes: list[Outcome]
    apply: Callable[[Session], bool]


BulkHandler = Callable[[Session, list[Envelope], Context], Prepared | None]
