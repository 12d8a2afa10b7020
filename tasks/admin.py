"""Admin one-off tasks: adjustments, claims, product settings, replays, backfill batches.

Each task takes primitive arguments (JSON), owns its transaction and returns a JSON-able
reply: ``{"status": "ok", ...}`` or ``{"status": "error", "reason": "..."}``. A business
error (a ``LedgerError`` or an invalid request) is a reply, never an exception, and its
transaction is rolled back, so it changes nothing. Transient database errors are retried
in place (``retry_conflicts``), then by Celery with a short backoff.

Task names are a wire format: ``dust.admin.*``. The interactive ones are routed to
``dust.requests`` (an admin never waits behind an event backlog); backfill batches go to
``dust.events``, since a historical load *is* an event backlog and must not hold up
checkout requests.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any, Literal

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from pydantic import StringConstraints, ValidationError, model_validator
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dust.ledger import adjustments, reports
from dust.ledger.errors import LedgerError
from dust.models import Account, Backfill, BackfillBatch, Entry, Event, Product
from dust.models.base import insert_for, utcnow
from dust.models.tables import DUST, STORE_CREDIT
from dust.subscribers.base import Amount, Currency, Identifier, Payload, PositiveAmount
from dust.tasks import inbox
from dust.tasks.inbox import request_context
from dust.worker.app import app
from dust.worker.db import session_scope
from dust.worker.settings import get_settings

log = logging.getLogger(__name__)

ADJUST = "dust.admin.adjust"
CLAIM = "dust.admin.claim"
SET_PRODUCT = "dust.admin.set_product"
REPLAY = "dust.admin.replay"
BACKFILL_BATCH = "dust.admin.backfill_batch"

#: Celery retries (1, 2, 4 s) after the quick in-place retries of a transient error.
MAX_RETRIES = 3
#: Replays rerun these statuses (``failed`` always, ``needs_attention`` on request).
REPLAYABLE = ("failed", "needs_attention")

Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
Actor = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Key = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=250)]
Code = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40, to_upper=True)
]


class UnknownCustomer(LedgerError):
    def __init__(self, customer_id: str, *, can_create: bool = True) -> None:
        hint = "; --create opens one" if can_create else ""
        super().__init__(f"unknown customer {customer_id} (no accounts{hint})")


def error(reason: str, **extra: Any) -> dict[str, Any]:
    return {"status": "error", "reason": reason, **extra}


def invalid(exc: ValidationError) -> dict[str, Any]:
    problems = []
    for item in exc.errors()[:3]:
        where = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return error("invalid request: " + "; ".join(problems))


def _run(task: Task, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``work`` (which opens its own transaction): business errors become replies,
    transient errors are retried by Celery, then reported."""
    try:
        return retry_in_place(work)
    except LedgerError as exc:
        return error(str(exc))
    except Exception as exc:
        if not inbox.is_transient(exc):
            raise
        if task.request.retries < MAX_RETRIES:
            raise task.retry(countdown=2**task.request.retries, max_retries=MAX_RETRIES) from None
        return error(f"the database refused it, nothing changed: {inbox.safe_message(exc)}")


def retry_in_place(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    return inbox.retry_conflicts(work)()


def customer_known(session: Session, customer_id: str) -> bool:
    """A customer is known once any of their accounts exists (events open them)."""
    found = session.scalar(select(Account.id).where(Account.customer_id == customer_id).limit(1))
    return found is not None


def entry_json(entry: Entry, account: Account) -> dict[str, Any]:
    """The entry an admin task posted: the history shape, with the account's owner."""
    return {**reports.entry_json(entry, account), "customer_id": account.customer_id}


def account_json(account: Account) -> dict[str, Any]:
    return {
        "customer_id": account.customer_id,
        "kind": account.kind,
        "currency_code": account.currency_code,
        "code": account.code,
        "balance": account.balance,
        "held": account.held,
        "available": account.balance - account.held - account.pending,
    }


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


@app.task(name=ADJUST, bind=True)
def adjust(self: Task, **kwargs: Any) -> dict[str, Any]:
    """An admin credit or debit (``direction``), audited with the actor and the reason.

    Without an ``idempotency_key`` the Celery task id is used, so a message the broker
    delivers twice (``acks_late``) still posts once."""
    try:
        request = AdjustRequest.model_validate(kwargs, context=request_context())
    except ValidationError as exc:
        return invalid(exc)
    key = request.idempotency_key or f"task:{self.request.id}"
    return _run(self, lambda: _adjust(request, key))


def _adjust(request: AdjustRequest, key: str) -> dict[str, Any]:
    with session_scope() as session:
        done = session.scalar(select(Entry).where(Entry.idempotency_key == f"admin:{key}"))
        if done is not None:
            account = session.get(Account, done.account_id)
            assert account is not None
            if not _same_adjustment(done, account, request):
                raise LedgerError(
                    f"idempotency key {key} was already used for another adjustment"
                    f" (entry {done.id}: {done.direction} {done.amount} {_label(account)}"
                    f" for {account.customer_id})"
                )
            return {"status": "ok", "repeat": True, **_posted(done, account)}
        if request.direction == "debit" or not request.create:
            if not customer_known(session, request.customer_id):
                raise UnknownCustomer(request.customer_id, can_create=request.direction == "credit")
        expires_at = None
        ttl = get_settings().points_ttl_days
        if request.kind == DUST and request.direction == "credit" and ttl:
            expires_at = utcnow() + timedelta(days=ttl)
        entry = adjustments.adjust(
            session,
            customer_id=request.customer_id,
            direction=request.direction,
            amount=request.amount,
            kind=request.kind,
            currency=request.currency_code,
            memo=request.reason,
            actor=request.actor,
            idempotency_key=key,
            expires_at=expires_at,
        )
        account = session.get(Account, entry.account_id)
        assert account is not None
        log.info(
            "admin %s of %d %s for %s by %s: entry %d",
            request.direction,
            request.amount,
            _label(account),
            request.customer_id,
            request.actor,
            entry.id,
        )
        return {"status": "ok", "repeat": False, **_posted(entry, account)}


def _same_adjustment(entry: Entry, account: Account, request: AdjustRequest) -> bool:
    return (
        entry.direction == request.direction
        and entry.amount == request.amount
        and account.customer_id == request.customer_id
        and account.kind == request.kind
        and account.currency_code == (request.currency_code if request.kind != DUST else None)
    )


def _label(account: Account) -> str:
    return "dust" if account.kind == DUST else f"store credit {account.currency_code}"


def _posted(entry: Entry, account: Account) -> dict[str, Any]:
    return {"entry": entry_json(entry, account), "account": account_json(account)}


# -- claims ----------------------------------------------------------------------------


class ClaimRequest(Payload):
    code: Code
    customer_id: Identifier
    actor: Actor
    create: bool = False


@app.task(name=CLAIM, bind=True)
def claim(self: Task, **kwargs: Any) -> dict[str, Any]:
    """Move an anonymous store-credit account's balance to the customer, in one transaction."""
    try:
        request = ClaimRequest.model_validate(kwargs, context=request_context())
    except ValidationError as exc:
        return invalid(exc)
    return _run(self, lambda: _claim(request))


def _claim(request: ClaimRequest) -> dict[str, Any]:
    with session_scope() as session:
        if not request.create and not customer_known(session, request.customer_id):
            raise UnknownCustomer(request.customer_id)
        entry = adjustments.claim(session, request.code, request.customer_id, request.actor)
        if entry is None:
            raise LedgerError(f"account {request.code} has nothing to claim")
        account = session.get(Account, entry.account_id)
        assert account is not None
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


@app.task(name=SET_PRODUCT, bind=True)
def set_product(self: Task, **kwargs: Any) -> dict[str, Any]:
    """Set a product's dust settings. They count as of now: a ``product.updated`` that
    occurred later replaces them, an older one delivered late does not."""
    try:
        request = ProductRequest.model_validate(kwargs, context=request_context())
    except ValidationError as exc:
        return invalid(exc)
    return _run(self, lambda: _set_product(request))


def _set_product(request: ProductRequest) -> dict[str, Any]:
    with session_scope() as session:
        row = session.get(Product, request.product_id, with_for_update=True)
        created = row is None
        if row is None:
            row = Product(product_id=request.product_id, dust_only=False, dust_price=None)
            session.add(row)
        if request.dust_only is not None:
            row.dust_only = request.dust_only
        if request.dust_price is not None:
            row.dust_price = request.dust_price
        if request.clear_dust_price:
            row.dust_price = None
        now = utcnow()
        row.occurred_at = now
        row.updated_at = now
        # No event set these settings; record who did instead.
        row.event_id = f"admin:{request.actor}"[:250]
        session.flush()
        return {"status": "ok", "created": created, "product": product_json(row)}


def product_json(row: Product) -> dict[str, Any]:
    return {
        "product_id": row.product_id,
        "dust_only": row.dust_only,
        "dust_price": row.dust_price,
        "occurred_at": row.occurred_at.isoformat(),
        "set_by": row.event_id,
        "updated_at": row.updated_at.isoformat(),
    }


# -- replays ---------------------------------------------------------------------------


@app.task(name=REPLAY, bind=True)
def replay(self: Task, event_id: str, actor: str | None = None) -> dict[str, Any]:
    """Run a ``failed`` or ``needs_attention`` event again through the exactly-once path
    (``inbox.process(..., replay=True)``). Any other status is a no-op, reported as such."""
    if not isinstance(event_id, str) or not event_id:
        return error("invalid request: event_id must be a non-empty string")
    with session_scope(read_only=True) as session:
        row = session.get(Event, event_id)
        if row is None:
            return error(f"no event with id {event_id}")
        previous, envelope = row.status, row.envelope
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
        transient = inbox.is_transient(exc)
        if transient and self.request.retries < MAX_RETRIES:
            raise self.retry(countdown=2**self.request.retries, max_retries=MAX_RETRIES) from None
        log.exception("replay of %s failed", event_id)
        try:
            inbox.record_failed(envelope, exc)
        except Exception:  # the database is down: the row keeps its status
            log.exception("could not record the failed replay of %s", event_id)
        return error(
            f"replay of {event_id} failed again: {type(exc).__name__}: {inbox.safe_message(exc)}",
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


@app.task(name=BACKFILL_BATCH, bind=True)
def backfill_batch(
    self: Task, backfill_id: int, first_line: int, line_count: int, lines: list[str]
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
        return error("invalid request: backfill_id, first_line, line_count, lines[str]")
    with session_scope(read_only=True) as session:
        if session.get(Backfill, backfill_id) is None:
            return error(f"no backfill with id {backfill_id}")
        done = session.scalar(
            select(BackfillBatch.counts).where(
                BackfillBatch.backfill_id == backfill_id, BackfillBatch.first_line == first_line
            )
        )
    if done is not None:
        return {"status": "ok", "skipped": True, "counts": json.loads(done or "{}")}
    context = inbox.context_from(get_settings())
    counts: Counter[str] = Counter()
    for offset, line in enumerate(lines):
        try:
            result = inbox.process(line, context=context)
        except SoftTimeLimitExceeded:
            return error(
                f"the batch at line {first_line} took too long (use a smaller --batch-size);"
                f" {offset} of its envelopes were applied"
            )
        except Exception as exc:
            if inbox.is_transient(exc) and self.request.retries < MAX_RETRIES:
                # The envelopes applied so far come back as duplicates: no harm.
                raise self.retry(
                    countdown=2**self.request.retries, max_retries=MAX_RETRIES
                ) from None
            log.exception("backfill %d, batch at line %d", backfill_id, first_line)
            return error(
                f"the batch at line {first_line} stopped at its envelope {offset + 1}:"
                f" {type(exc).__name__}: {inbox.safe_message(exc)}"
            )
        if result.status == "duplicate":
            # Applied before (an earlier, interrupted run; or the file repeats an event):
            # count it under the status it has, and as a duplicate.
            counts["duplicate"] += 1
            counts[result.reason or "processed"] += 1
        else:
            counts[result.status] += 1
    return _run(self, lambda: _record_batch(backfill_id, first_line, line_count, dict(counts)))


def _record_batch(
    backfill_id: int, first_line: int, line_count: int, counts: dict[str, int]
) -> dict[str, Any]:
    with session_scope() as session:
        insert = insert_for(session)
        inserted = session.execute(
            insert(BackfillBatch)
            .values(
                backfill_id=backfill_id,
                first_line=first_line,
                line_count=line_count,
                counts=json.dumps(counts, sort_keys=True),
                done_at=utcnow(),
            )
            .on_conflict_do_nothing()
        ).rowcount
        if inserted:
            session.execute(
                update(Backfill)
                .where(Backfill.id == backfill_id)
                .values(lines_done=Backfill.lines_done + line_count)
            )
    return {"status": "ok", "skipped": not inserted, "counts": counts}
