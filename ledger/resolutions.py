"""Closing an event that needs an admin: ``needs_attention`` (a charge that could not be
made, a refund beyond what was paid) or ``failed`` (retries ran out, a bug).

A resolution records who closed it and why (``dust_event_resolutions``, one per event)
and sets the event ``resolved``, so reconciliation no longer counts it as work left undone.
When the ledger itself needs correcting, the resolution posts one admin adjustment in the
same transaction (``dust.ledger.adjustments.adjust``, idempotency key ``resolve:<event id>``)
and keeps its entry's id. Nothing else changes: the event's reason and detail stay as
they were recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from dust.ledger import adjustments
from dust.ledger.errors import LedgerError
from dust.models import Entry, Event, EventResolution
from dust.models.base import utcnow

#: Statuses an admin can resolve.
RESOLVABLE = ("needs_attention", "failed")


@dataclass(frozen=True)
class Correction:
    """The correcting adjustment of a resolution."""

    customer_id: str
    direction: str  # credit | debit
    amount: int
    kind: str  # dust | store_credit
    currency: str | None = None


def resolve(
    session: Session,
    event_id: str,
    *,
    reason: str,
    actor: str,
    correction: Correction | None = None,
) -> tuple[EventResolution, Entry | None]:
    """Resolve ``event_id``; raises :class:`LedgerError` when there is no such event, it
    is not ``needs_attention`` or ``failed``, or the correction cannot be posted (a debit
    beyond what is available)."""
    if not reason.strip():
        raise LedgerError("a reason is required")
    event = session.scalar(select(Event).where(Event.event_id == event_id).with_for_update())
    if event is None:
        raise LedgerError(f"no event with id {event_id}")
    if event.status not in RESOLVABLE:
        raise LedgerError(
            f"event {event_id} is {event.status}: only needs_attention or failed events"
            " are resolved"
        )
    entry = None
    if correction is not None:
        entry = adjustments.adjust(
            session,
            customer_id=correction.customer_id,
            direction=correction.direction,
            amount=correction.amount,
            kind=correction.kind,
            currency=correction.currency,
            memo=f"resolution of event {event_id}: {reason.strip()}",
            actor=actor,
            idempotency_key=f"resolve:{event_id}",
        )
    resolution = EventResolution(
        event_id=event_id,
        previous_status=event.status,
        reason=reason.strip(),
        actor=actor,
        entry_id=entry.id if entry is not None else None,
        resolved_at=utcnow(),
    )
    session.add(resolution)
    event.status = "resolved"
    session.flush()
    return resolution, entry
