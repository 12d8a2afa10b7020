"""Checkout requests with a reply (docs/CONTRACT.md §5.1), on queue ``dust.requests``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from ledger import holds, reports
from ledger.accounts import ensure_account, lock_accounts
from models.tables import STORE_CREDIT
from subscribers.base import Currency, Identifier, Payload, PositiveAmount, describe
from tasks.inbox import retry_conflicts
from worker.app import app
from worker.db import session_scope
from worker.settings import get_settings


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


def _invalid(exc: ValidationError) -> dict[str, Any]:
    return {"status": "rejected", "reason": "invalid_request", "detail": describe(exc)}


@retry_conflicts
def reserve_hold(request: ReserveRequest) -> dict[str, Any]:
    with session_scope() as session:
        currency = request.currency_code if request.kind == STORE_CREDIT else None
        account_id = ensure_account(session, request.customer_id, request.kind, currency)
        account = lock_accounts(session, [account_id])[account_id]
        ttl = get_settings().hold_ttl_seconds
        return holds.reserve(session, account, request.cart_id, request.amount, ttl).as_reply()


@app.task(name="dust.reserve")
def reserve(**kwargs: Any) -> dict[str, Any]:
    try:
        request = ReserveRequest.model_validate(kwargs)
    except ValidationError as exc:
        return _invalid(exc)
    return reserve_hold(request)


@retry_conflicts
def release_cart(cart_id: str) -> dict[str, Any]:
    with session_scope() as session:
        return {"status": "released", "amount": holds.release_cart(session, cart_id)}


@app.task(name="dust.release")
def release(**kwargs: Any) -> dict[str, Any]:
    try:
        request = ReleaseRequest.model_validate(kwargs)
    except ValidationError as exc:
        return _invalid(exc)
    return release_cart(request.cart_id)


@app.task(name="dust.balance")
def balance(**kwargs: Any) -> dict[str, Any]:
    try:
        request = BalanceRequest.model_validate(kwargs)
    except ValidationError as exc:
        return _invalid(exc)
    with session_scope() as session:
        return reports.balance(session, request.customer_id)
