"""What every subscriber shares: the envelope, the context it runs in, its outcome.

A subscriber is a plain function ``handle(session, envelope, context) -> Outcome``. It
validates its payload (a pydantic model), records what the event says and asks the ledger
for the entries. It never commits and knows nothing of Celery.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, TypeGuard, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
)
from sqlalchemy.orm import Session

from dust.ledger.orders import EarnPolicy
from dust.worker.currencies import problem as currency_problem
from dust.worker.names import MAX_AMOUNT, MAX_ID

#: Ids are taken exactly as sent: never stripped or folded, since ``" cus_1 "`` made into
#: ``cus_1`` would credit another customer. No control characters (PostgreSQL text cannot
#: hold NUL) and no whitespace at either end: such an id is refused, not rewritten.
ID_PATTERN = re.compile(
    r"[^\s\x00-\x1f\x7f-\x9f\u200b\ufeff](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f\u200b\ufeff])?"
)


def _taken_as_sent(value: str) -> str:
    if ID_PATTERN.fullmatch(value) is None:
        raise ValueError(
            "an id is taken as sent: no whitespace at either end, no control characters"
        )
    return value


def is_identifier(value: object) -> TypeGuard[str]:
    """Whether ``value`` is an id as :data:`Identifier` accepts it."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_ID
        and ID_PATTERN.fullmatch(value) is not None
    )


Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID), AfterValidator(_taken_as_sent)
]
Amount = Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)]
PositiveAmount = Annotated[int, Field(strict=True, gt=0, le=MAX_AMOUNT)]


def _known_currency(code: str, info: ValidationInfo) -> str:
    """ISO 4217, or the codes the validation context's ``currencies`` holds (the settings'
    list, passed by :func:`parse` and the request tasks); matched case-insensitively."""
    currencies = (info.context or {}).get("currencies")
    why = currency_problem(code, currencies)
    if why is not None:
        raise ValueError(why)
    return code.lower()


Currency = Annotated[str, StringConstraints(max_length=3), AfterValidator(_known_currency)]


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
    #: Currency codes events may use: ISO 4217 and ``DUST_EXTRA_CURRENCIES``.
    currencies: frozenset[str] | None = None


@dataclass
class Outcome:
    status: str = "processed"  # processed | ignored | needs_attention
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def parse(model: type[P], data: dict[str, Any], context: Context | None = None) -> P:
    """Validate ``data`` into ``model`` or raise :class:`Rejected` with a readable reason."""
    try:
        return model.model_validate(data, context=validation_context(context))
    except ValidationError as exc:
        raise Rejected(describe(exc)) from None


def validation_context(context: Context | None) -> dict[str, Any]:
    """What the payload types read while validating (the known currencies)."""
    return {"currencies": context.currencies if context is not None else None}


def describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "payload"
        problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "invalid payload: " + "; ".join(problems)


Handler = Callable[[Session, Envelope, Context], Outcome]


@dataclass(frozen=True)
class Prepared:
    """The first events of a run that a subscriber applies together (``BULK_SUBSCRIBERS``):
    their outcomes, one per event taken, and ``apply``, which writes them all and returns
    False when the database turned out not to allow it (the caller then rolls back and
    applies them one at a time). The outcomes are complete once ``apply`` has returned
    True (what it found under its locks, e.g. a welcome bonus credited before, may fill
    in their details)."""

    outcomes: list[Outcome]
    apply: Callable[[Session], bool]


BulkHandler = Callable[[Session, list[Envelope], Context], Prepared | None]


@dataclass(frozen=True)
class Touches:
    """The rows an event's subscriber locks or reads: its order, its customer's accounts,
    its cart's holds, its items' products, its refund. The task layer reads and locks those
    of many events at once, first (``dust.inbox``, ``subscribers.lock_run``)."""

    order_id: str | None = None
    customer_id: str | None = None
    cart_id: str | None = None
    product_ids: tuple[str, ...] = ()
    refund_id: str | None = None
    #: Whether it may debit dust (a charge, a clawback): the lots of its customer's dust
    #: account are then read with the run's other rows.
    draws: bool = False


Toucher = Callable[[Envelope, Context], Touches | None]
"""What an event touches; None when its payload is invalid (its handler rejects it)."""


def valid(model: type[P], envelope: Envelope, context: Context) -> P | None:
    """``envelope``'s payload validated as ``model``; None when it is not valid."""
    try:
        return model.model_validate(envelope.data, context=validation_context(context))
    except ValidationError:
        return None
