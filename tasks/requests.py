"""Checkout requests with a reply (docs/CONTRACT.md §5.1), on queue ``dust.requests``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from sqlalchemy.orm import Session

from dust.inbox import request_context
from dust.ledger import charging, holds, reconcile, reports
from dust.ledger.accounts import ensure_account, lock_accounts
from dust.models.tables import DUST, STORE_CREDIT
from dust.subscribers.base import Currency, Identifier, Payload, PositiveAmount
from dust.tasks.base import RequestTask
from dust.worker import names
from dust.worker.app import app
from dust.worker.settings import get_settings


class ReserveRequest(Payload):
    cart_id: Identifier
    customer_id: Identifier
    amount: PositiveAmount
    kind: Literal["dust", "store_credit"]
    currency_code: Currency | None = None

    @model_validator(mode="after")
    def _currency_for_store_credit(self) -> ReserveRequest:
        if self.kind == STORE_CREDIT and self.currency_code is None:
            raise ValueError("currency_code is required for store_credit")
        return self


class ReleaseRequest(Payload):
    cart_id: Identifier


class BalanceRequest(Payload):
    customer_id: Identifier = Field()


class HistoryRequest(Payload):
    customer_id: Identifier
    kind: Literal["dust", "store_credit"]
    currency_code: Currency | None = None
    limit: int = Field(default=20, strict=True, ge=1, le=100)
    before: str | None = Field(default=None, max_length=100)

    @field_validator("before", mode="after")
    @classmethod
    def _cursor(cls, value: str | None) -> str | None:
        if value is not None:
            reports.decode_cursor(value)  # ValueError: a clear "invalid_request"
        return value


class OrderRefundsRequest(Payload):
    order_id: Identifier


def reserve_hold(session: Session, request: ReserveRequest) -> dict[str, Any]:
    currency = request.currency_code if request.kind == STORE_CREDIT else None
    account_id = ensure_account(session, request.customer_id, request.kind, currency)
    account = lock_accounts(session, [account_id])[account_id]
    settings = get_settings()
    reservation = holds.reserve(
        session, account, request.cart_id, request.amount, settings.hold_ttl_seconds
    )
    reply = reservation.as_reply()
    if request.kind == DUST:
        reply["redeem_value"] = str(settings.redeem_for(request.currency_code))
    return reply


@app.task(name=names.RESERVE, base=RequestTask, bind=True)
def reserve(self: RequestTask, **kwargs: Any) -> dict[str, Any]:
    try:
        request = ReserveRequest.model_validate(kwargs, context=request_context())
    except ValidationError as exc:
        return self.refuse(exc)
    return self.transaction(lambda session: reserve_hold(session, request))


@app.task(name=names.RELEASE, base=RequestTask, bind=True)
def release(self: RequestTask, **kwargs: Any) -> dict[str, Any]:
    try:
        request = ReleaseRequest.model_validate(kwargs, context=request_context())
    except ValidationError as exc:
        return self.refuse(exc)
    return self.transaction(
        lambda session: {
            "status": "released",
            "amount": holds.release_cart(session, request.cart_id),
        }
    )


@app.task(name=names.BALANCE, base=RequestTask, bind=True)
def balance(self: RequestTask, **kwargs: Any) -> dict[str, Any]:
    try:
        request = BalanceRequest.model_validate(kwargs, context=request_context())
    except ValidationError as exc:
        return self.refuse(exc)
    redeem_values = get_settings().redeem_table()
    return self.transaction(
        lambda session: reports.balance(session, request.customer_id, redeem_values),
        read_only=True,
    )


@app.task(name=names.HISTORY, base=RequestTask, bind=True)
def history(self: RequestTask, **kwargs: Any) -> dict[str, Any]:
    """One page of a customer's entries of one kind, newest first (docs/CONTRACT.md §5.1)."""
    try:
        request = HistoryRequest.model_validate(kwargs)
    except ValidationError as exc:
        return self.refuse(exc)
    currency = request.currency_code if request.kind == STORE_CREDIT else None
    return self.transaction(
        lambda session: reports.history_page(
            session, request.customer_id, request.kind, currency, request.limit, request.before
        ),
        read_only=True,
    )


@app.task(name=names.ORDER_REFUNDS, base=RequestTask, bind=True)
def order_refunds(self: RequestTask, **kwargs: Any) -> dict[str, Any]:
    """The refunds of an order and what each credited: a guest refund's claim code, for
    the platform to show the customer (docs/CONTRACT.md §5.1)."""
    try:
        request = OrderRefundsRequest.model_validate(kwargs)
    except ValidationError as exc:
        return self.refuse(exc)
    refunds = self.transaction(
        lambda session: charging.refunds_of(session, request.order_id), read_only=True
    )
    return {"order_id": request.order_id, "refunds": refunds}


#: The event statuses someone has to look at (docs/CONTRACT.md §3.4).
ATTENTION = ("needs_attention", "failed")


class OverviewRequest(Payload):
    limit: int = Field(default=20, strict=True, ge=1, le=100)


@app.task(name=names.OVERVIEW, base=RequestTask, bind=True)
def overview(self: RequestTask, **kwargs: Any) -> dict[str, Any]:
    """What an operator's page shows (docs/CONTRACT.md §5.3): the last reconciliation, the
    events that need attention or failed (newest first) with how many there are, and what
    the store owes per currency."""
    try:
        request = OverviewRequest.model_validate(kwargs)
    except ValidationError as exc:
        return self.refuse(exc)
    redeem_values = get_settings().redeem_table()

    def read(session: Session) -> dict[str, Any]:
        record = reconcile.latest_record(session)
        return {
            "reconciliation": reconcile.record_json(record) if record is not None else None,
            "events": reports.events(session, ATTENTION, request.limit),
            "event_counts": reports.event_counts(session, ATTENTION),
            "owed": reports.owed(session, redeem_values),
        }

    return self.transaction(read, read_only=True)
