"""``dust.admin.resolve``: close a ``needs_attention`` or ``failed`` event, audited, with an
optional correcting adjustment (``ledger/resolutions.py``). On queue ``dust.requests``."""

from __future__ import annotations

import logging
from typing import Any, Literal

from celery import Task
from pydantic import ValidationError, model_validator

from dust.ledger.resolutions import Correction, resolve
from dust.models import Account
from dust.models.tables import DUST, STORE_CREDIT
from dust.subscribers.base import Currency, Identifier, Payload, PositiveAmount
from dust.tasks.admin import Actor, Reason, _run, account_json, entry_json, invalid
from dust.worker.app import app
from dust.worker.db import session_scope

log = logging.getLogger(__name__)

RESOLVE = "dust.admin.resolve"


class ResolveRequest(Payload):
    event_id: Identifier
    reason: Reason
    actor: Actor
    #: The correcting adjustment, all or none of these.
    customer_id: Identifier | None = None
    direction: Literal["credit", "debit"] | None = None
    amount: PositiveAmount | None = None
    kind: Literal["dust", "store_credit"] | None = None
    currency_code: Currency | None = None

    @model_validator(mode="after")
    def _correction(self) -> ResolveRequest:
        given = [self.customer_id, self.direction, self.amount, self.kind]
        if any(v is not None for v in given) and not all(v is not None for v in given):
            raise ValueError("a correction needs customer_id, direction, amount and kind")
        if self.kind == STORE_CREDIT and self.currency_code is None:
            raise ValueError("currency_code is required for store_credit")
        if self.kind == DUST and self.currency_code is not None:
            raise ValueError("dust has no currency")
        return self

    def correction(self) -> Correction | None:
        if self.direction is None:
            return None
        assert self.customer_id and self.amount and self.kind
        return Correction(
            self.customer_id, self.direction, self.amount, self.kind, self.currency_code
        )


@app.task(name=RESOLVE, bind=True)
def resolve_event(self: Task, **kwargs: Any) -> dict[str, Any]:
    """Resolve one event; a repeat of the same message finds it resolved and says so."""
    try:
        request = ResolveRequest.model_validate(kwargs)
    except ValidationError as exc:
        return invalid(exc)
    return _run(self, lambda: _resolve(request))


def _resolve(request: ResolveRequest) -> dict[str, Any]:
    with session_scope() as session:
        resolution, entry = resolve(
            session,
            request.event_id,
            reason=request.reason,
            actor=request.actor,
            correction=request.correction(),
        )
        reply: dict[str, Any] = {
            "status": "ok",
            "event_id": resolution.event_id,
            "previous": resolution.previous_status,
            "outcome": "resolved",
            "reason": resolution.reason,
            "actor": resolution.actor,
            "resolved_at": resolution.resolved_at.isoformat(),
            "entry": None,
            "account": None,
        }
        if entry is not None:
            account = session.get(Account, entry.account_id)
            assert account is not None
            reply["entry"] = entry_json(entry, account)
            reply["account"] = account_json(account)
        log.info(
            "event %s resolved by %s (was %s)%s",
            resolution.event_id,
            resolution.actor,
            resolution.previous_status,
            f"; entry {entry.id}" if entry is not None else "",
        )
        return reply
