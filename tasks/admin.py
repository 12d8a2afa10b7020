"""Admin one-off tasks: adjustments, claims, product settings, replays, backfill batches.

Each task takes primitive arguments (JSON) and returns a JSON-able reply through its base
class (``tasks/base.py``, ``AdminTask``): ``{"status": "ok", ...}`` or ``{"status":
"error", "reason": "..."}``, its transaction and its retries of a transient error. The rules
they apply live in the ledger (``ledger/adjustments.py``, ``ledger/products.py``).

Task names are a wire format (``worker/names.py``): ``dust.admin.*``. The interactive ones
are routed to ``dust.requests`` (an admin never waits behind an event backlog); backfill
batches go to ``dust.events``, since a historical load *is* an event backlog and must not
hold up checkout requests.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Annotated, Any, Literal

from celery.exceptions import SoftTimeLimitExceeded
from pydantic import StringConstraints, ValidationError, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from dust import inbox, runs
from dust.inbox import request_context
from dust.ledger import adjustments, products
from dust.ledger.reports import account_json, posted_json
from dust.models import Account, Backfill, BackfillBatch, Entry, Event
from dust.models.base import utcnow
from dust.models.tables import DUST, STORE_CREDIT
from dust.subscribers.base import Amount, Currency, Identifier, Payload, PositiveAmount
from dust.tasks.base import AdminTask
from dust.worker.app import app
from dust.worker.errors import safe_message
from dust.worker.names import (
    ADJUST,
    BACKFILL_BATCH,
    CLAIM,
    MAX_ACTOR,
    MAX_KEY,
    MAX_REASON,
    REPLAY,
    REPLAYABLE,
    SET_PRODUCT,
)
from dust.worker.settings import get_settings

log = logging.getLogger(__name__)

Reason = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_REASON)
]
Actor = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ACTOR)]
Key = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_KEY)]
Code = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40, to_upper=True)
]


def _posted(entry: Entry, account: Account) -> dict[str, Any]:
    return {"entry": posted_json(entry, account), "account": account_json(account)}


# -- adjustments -----------------------------------------------------------------------


class AdjustRequest(Payload):
    customer_id: Identifier
    direction: Literal["credit", "debit"]
    amount: PositiveAmount
    kind: Literal["dust", "store_credit"]
    currency_code: Currency | None = None
    reason: Reason
    actor: Actor
    idempotency_key: Key | None = None
    #: A credit to a customer with no accounts opens one only when asked to.
    create: bool = False

    @model_validator(mode="after")
    def _currency(self) -> AdjustRequest:
        if self.kind == STORE_CREDIT and self.currency_code is None:
            raise ValueError("currency_code is required for store_credit")
        if self.kind == DUST and self.currency_code is not None:
            raise ValueError("dust has no currency")
        return self


@app.task(name=ADJUST, base=AdminTask, bind=True)
def adjust(self: AdminTask, **kwargs: Any) -> dict[str, Any]:
    """An admin credit or debit (``direction``), audited with the actor and the reason.

    Without an ``idempotency_key`` the Celery task id is used, so a message the broker
    delivers twice (``acks_late``) still posts once."""
    try:
        request = AdjustRequest.model_validate(kwargs, context=request_context())
    except ValidationError as exc:
        return self.refuse(exc)
    key = request.idempotency_key or f"task:{self.request.id}"
    ttl_days = get_settings().points_ttl_days

    def work(session: Session) -> dict[str, Any]:
        entry, account, repeat = adjustments.operator_adjust(
            session,
            customer_id=request.customer_id,
            direction=request.direction,
            amount=request.amount,
            kind=request.kind,
            currency=request.currency_code,
            memo=request.reason,
            actor=request.actor,
            key=key,
            create=request.create,
            ttl_days=ttl_days,
            now=utcnow(),
        )
        if not repeat:
            log.info(
                "admin %s of %d %s for %s by %s: entry %d",
                request.direction,
                request.amount,
                adjustments.label(account),
                request.customer_id,
                request.actor,
                entry.id,
            )
        return {"status": "ok", "repeat": repeat, **_posted(entry, account)}

    return self.reply(work)


# -- claims ----------------------------------------------------------------------------


class ClaimRequest(Payload):
    code: Code
    customer_id: Identifier
    actor: Actor
    create: bool = False


@app.task(name=CLAIM, base=AdminTask, bind=True)
def claim(self: AdminTask, **kwargs: Any) -> dict[str, Any]:
    """Move an anonymous store-credit account's balance to the customer, in one transaction."""
    try:
        request = ClaimRequest.model_validate(kwargs, context=request_context())
    except ValidationError as exc:
        return self.refuse(exc)

    def work(session: Session) -> dict[str, Any]:
        entry, account = adjustments.operator_claim(
            session, request.code, request.customer_id, request.actor, create=request.create
        )
        log.info(
            "claim of %s (%d %s) by %s, actor %s",
            request.code,
            entry.amount,
            account.currency_code,
            request.customer_id,
            request.actor,
        )
        return {
            "status": "ok",
            "code": request.code,
            "amount": entry.amount,
            **_posted(entry, account),
        }

    return self.reply(work)


# -- product settings ------------------------------------------------------------------


class ProductRequest(Payload):
    product_id: Identifier
    dust_only: bool | None = None
    dust_price: Amount | None = None
    clear_dust_price: bool = False
    actor: Actor

    @model_validator(mode="after")
    def _something(self) -> ProductRequest:
        if self.dust_only is None and self.dust_price is None and not self.clear_dust_price:
            raise ValueError("nothing to set")
        if self.dust_price is not None and self.clear_dust_price:
            raise ValueError("dust_price and clear_dust_price exclude each other")
        return self


@app.task(name=SET_PRODUCT, base=AdminTask, bind=True)
def set_product(self: AdminTask, **kwargs: Any) -> dict[str, Any]:
    """Set a product's dust settings. They count as of now: a ``product.updated`` that
    occurred later replaces them, an older one delivered late does not."""
    try:
        request = ProductRequest.model_validate(kwargs, context=request_context())
    except ValidationError as exc:
        return self.refuse(exc)

    def work(session: Session) -> dict[str, Any]:
        row, created = products.set_by_operator(
            session,
            request.product_id,
            actor=request.actor,
            dust_only=request.dust_only,
            dust_price=request.dust_price,
            clear_dust_price=request.clear_dust_price,
        )
        return {"status": "ok", "created": created, "product": products.product_json(row)}

    return self.reply(work)


# -- replays ---------------------------------------------------------------------------


@app.task(name=REPLAY, base=AdminTask, bind=True)
def replay(self: AdminTask, event_id: str, actor: str | None = None) -> dict[str, Any]:
    """Run a ``failed`` or ``needs_attention`` event again through the exactly-once path
    (``inbox.process(..., replay=True)``). Any other status is a no-op, reported as such."""
    if not isinstance(event_id, str) or not event_id:
        return self.error("invalid request: event_id must be a non-empty string")

    def recorded(session: Session) -> tuple[str, str] | None:
        row = session.get(Event, event_id)
        return None if row is None else (row.status, row.envelope)

    found = self.transaction(recorded, read_only=True)
    if found is None:
        return self.error(f"no event with id {event_id}")
    previous, envelope = found
    if previous not in REPLAYABLE:
        return {
            "status": "ok",
            "event_id": event_id,
            "previous": previous,
            "outcome": "unchanged",
            "reason": f"already {previous}; nothing to replay",
        }
    try:
        result = inbox.process(envelope, replay=True)
    except Exception as exc:
        self.retry_if_transient(exc)
        log.exception("replay of %s failed", event_id)
        try:
            inbox.record_failed(envelope, exc)
        except Exception:  # the database is down: the row keeps its status
            log.exception("could not record the failed replay of %s", event_id)
        return self.error(
            f"replay of {event_id} failed again: {type(exc).__name__}: {safe_message(exc)}",
            event_id=event_id,
        )
    outcome = "unchanged" if result.status == "duplicate" else result.status
    log.info("replay of %s by %s: %s -> %s", event_id, actor or "?", previous, outcome)
    return {
        "status": "ok",
        "event_id": event_id,
        "previous": previous,
        "outcome": outcome,
        "reason": result.reason,
        "detail": result.detail,
    }


# -- backfill --------------------------------------------------------------------------


@app.task(name=BACKFILL_BATCH, base=AdminTask, bind=True)
def backfill_batch(
    self: AdminTask, backfill_id: int, first_line: int, line_count: int, lines: list[str]
) -> dict[str, Any]:
    """Apply the envelopes of one batch of a backfill file (lines ``first_line`` to
    ``first_line + line_count - 1``; blank lines are not sent) through the exactly-once
    path, then record the batch. Sent again (a resumed load, a redelivery), it changes
    nothing: every envelope is a duplicate and the batch row exists already."""
    if not (
        isinstance(backfill_id, int)
        and isinstance(first_line, int)
        and isinstance(line_count, int)
        and isinstance(lines, list)
        and all(isinstance(line, str) for line in lines)
    ):
        return self.error("invalid request: backfill_id, first_line, line_count, lines[str]")

    def known(session: Session) -> tuple[bool, str | None]:
        if session.get(Backfill, backfill_id) is None:
            return False, None
        done = session.scalar(
            select(BackfillBatch.counts).where(
                BackfillBatch.backfill_id == backfill_id, BackfillBatch.first_line == first_line
            )
        )
        return True, done

    exists, done = self.transaction(known, read_only=True)
    if not exists:
        return self.error(f"no backfill with id {backfill_id}")
    if done is not None:
        return {"status": "ok", "skipped": True, "counts": json.loads(done or "{}")}
    context = inbox.context_from(get_settings())
    counts: Counter[str] = Counter()
    for offset, line in enumerate(lines):
        try:
            result = inbox.process(line, context=context)
        except SoftTimeLimitExceeded:
            return self.error(
                f"the batch at line {first_line} took too long (use a smaller --batch-size);"
                f" {offset} of its envelopes were applied"
            )
        except Exception as exc:
            # The envelopes applied so far come back as duplicates: no harm.
            self.retry_if_transient(exc)
            log.exception("backfill %d, batch at line %d", backfill_id, first_line)
            return self.error(
                f"the batch at line {first_line} stopped at its envelope {offset + 1}:"
                f" {type(exc).__name__}: {safe_message(exc)}"
            )
        if result.status == "duplicate":
            # Applied before (an earlier, interrupted run; or the file repeats an event):
            # count it under the status it has, and as a duplicate.
            counts["duplicate"] += 1
            counts[result.reason or "processed"] += 1
        else:
            counts[result.status] += 1
    return self.reply(
        lambda session: runs.record_backfill_batch(
            session, backfill_id, first_line, line_count, dict(counts)
        )
    )
