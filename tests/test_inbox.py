"""The exactly-once path, ``dust.tasks.inbox.process``: duplicates, conflicts, bad input and
all-or-nothing application (docs/CONTRACT.md §3 "Events in", §4 "Bad input")."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from dust.models import EventConflict
from dust.subscribers.base import Outcome, Rejected
from dust.worker.db import session_scope

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)

ORDER = {
    "id": "evt_01",
    "name": "order.placed",
    "occurred_at": "2026-11-20T10:00:00Z",
    "data": {
        "id": "order_1",
        "customer_id": "cus_1",
        "cart_id": "cart_1",
        "currency_code": "usd",
        "total": 10999,
        "shipping_total": 999,
        "tax_total": 0,
        "dust_total": 0,
        "store_credit_total": 0,
        "items": [{"id": "item_1", "product_id": "prod_1", "quantity": 2, "total": 10000}],
    },
}


def with_data(**changes: Any) -> dict[str, Any]:
    return {**ORDER, "data": {**ORDER["data"], **changes}}


def without(field: str) -> dict[str, Any]:
    return {**ORDER, "data": {k: v for k, v in ORDER["data"].items() if k != field}}


def test_duplicate_delivery_changes_nothing(dust: Any) -> None:
    first = dust.process(ORDER)
    assert first.status == "processed", first.reason
    after_first = dust.counts()

    again = dust.process(ORDER)
    # the same envelope as a JSON string with its keys in another order is the same content
    as_text = dust.process(json.dumps(dict(reversed(list(ORDER.items())))))

    assert (again.status, again.reason) == ("duplicate", "processed")
    assert as_text.status == "duplicate"
    assert dust.counts() == after_first
    assert dust.dust("cus_1") == 100
    assert dust.event("evt_01").attempts == 1


def test_conflicting_duplicate_is_recorded_and_changes_nothing(dust: Any) -> None:
    dust.process(ORDER)
    before = dust.counts()
    other = with_data(total=20999)

    result = dust.process(other)

    assert result.status == "conflict"
    assert "evt_01" in result.reason
    assert dust.dust("cus_1") == 100
    with session_scope() as session:
        [conflict] = session.scalars(select(EventConflict)).all()
        assert conflict.event_id == "evt_01"
        assert json.loads(conflict.envelope)["data"]["total"] == 20999
    assert dust.counts() == before | {"dust_event_conflicts": 1}
    # the same conflicting content again is remembered once
    assert dust.process(other).status == "conflict"
    assert dust.count("dust_event_conflicts") == 1
    assert dust.event("evt_01").status == "processed"


MALFORMED = {
    "string amount": with_data(total="10999"),
    "float amount": with_data(total=109.99),
    "integral float amount": with_data(total=10999.0),
    "boolean amount": with_data(dust_total=True),
    "negative amount": with_data(total=-1),
    "amount beyond any order": with_data(total=10**18),
    "negative item total": with_data(items=[{"product_id": "p", "total": -5}]),
    "missing field": without("currency_code"),
    "missing total": without("total"),
    "unknown currency format": with_data(currency_code="US$"),
    "four-letter currency": with_data(currency_code="usdt"),
    "over-long customer id": with_data(customer_id="c" * 201),
    "empty order id": with_data(id=""),
    "totals that do not add up": {
        **without("items"),
        "data": {**without("items")["data"], "shipping_total": 20000},
    },
    "over-long event id": {**ORDER, "id": "e" * 251},
    "over-long name": {**ORDER, "name": "n" * 101},
    "non-string id": {**ORDER, "id": 42},
    "data not an object": {**ORDER, "data": ["order_1"]},
    "occurred_at without offset": {**ORDER, "occurred_at": "2026-11-20T10:00:00"},
    "occurred_at not a date": {**ORDER, "occurred_at": "yesterday"},
    "occurred_at before year 1 in UTC": {**ORDER, "occurred_at": "0001-01-01T00:00:00+01:00"},
    "occurred_at at the end of time": {**ORDER, "occurred_at": "9999-12-31T23:00:00Z"},
    "NUL in an id": with_data(customer_id="cus\u00001"),
    "control character in an id": with_data(cart_id="cart\n1"),
    "NUL in the event id": {**ORDER, "id": "evt\u000001"},
    "NUL in the name": {**ORDER, "name": "order.placed\u0000"},
    "lone surrogate": with_data(customer_id="cus_\ud800"),
    "lone surrogate in JSON text": '{"id": "e", "name": "x\\ud800", "data": {}}',
    "integer too long for JSON": '{"id": "e", "name": "order.placed", "data": {"total": '
    + "9" * 5000
    + "}}",
    "no id and none derivable": {"name": "order.placed", "data": {"total": 1}},
    "refund without to_store_credit": {
        "id": "evt_r",
        "name": "refund.created",
        "data": {"id": "ref_1", "order_id": "order_1", "amount": 1, "currency_code": "usd"},
    },
    "refund of zero": {
        "id": "evt_r",
        "name": "refund.created",
        "data": {
            "id": "ref_1",
            "order_id": "order_1",
            "amount": 0,
            "currency_code": "usd",
            "to_store_credit": True,
        },
    },
    "invalid JSON string": '{"id": "evt_01", "name": "order.placed", ',
    "JSON array": "[1, 2, 3]",
    "JSON string": '"order.placed"',
    "non-object": ["order.placed", {"id": "order_1"}],
    "number": 42,
}


@pytest.mark.parametrize("raw", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_event_is_rejected_with_a_reason_and_the_next_one_processes(
    dust: Any, raw: Any
) -> None:
    result = dust.process(raw)

    assert result.status == "rejected"
    assert result.reason and len(result.reason) < 1000
    event = dust.event(result.event_id)
    assert event is not None and event.status == "rejected" and event.reason == result.reason
    assert {t: n for t, n in dust.counts().items() if n} == {"dust_events": 1}
    # a redelivery is a no-op, never retried
    assert dust.process(raw).status == "duplicate"

    good = {**ORDER, "id": "evt_good"}
    assert dust.process(good).status == "processed"
    assert dust.dust("cus_1") == 100


def test_a_rejection_half_way_leaves_no_partial_writes(
    dust: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dust.ledger.accounts import ensure_account, lock_accounts
    from dust.ledger.journal import Ref, credit
    from dust.subscribers import SUBSCRIBERS

    def credits_then_rejects(session: Any, envelope: Any, context: Any) -> Outcome:
        account_id = ensure_account(session, "cus_1", "dust")
        account = lock_accounts(session, [account_id])[account_id]
        credit(session, account, 500, Ref("earn", "order", "o"), expires_at=T0)
        raise Rejected("contradicts what is recorded")

    monkeypatch.setitem(SUBSCRIBERS, "test.half_way", credits_then_rejects)
    result = dust.process({"id": "evt_half", "name": "test.half_way", "data": {"id": "x"}})

    assert (result.status, result.reason) == ("rejected", "contradicts what is recorded")
    assert {t: n for t, n in dust.counts().items() if n} == {"dust_events": 1}
    assert dust.event("evt_half").status == "rejected"


def test_a_real_rejection_after_the_order_is_known_changes_no_balance(dust: Any) -> None:
    dust.process(ORDER)
    before = dust.counts()
    refund = {
        "id": "evt_refund",
        "name": "refund.created",
        "data": {
            "id": "ref_1",
            "order_id": "order_1",
            "amount": 5000,
            "currency_code": "eur",
            "to_store_credit": True,
        },
    }
    assert dust.process(refund).status == "rejected"
    assert dust.counts() == before | {"dust_events": before["dust_events"] + 1}
    assert dust.balance("cus_1")["store_credit"] == []


def test_an_order_placed_for_an_order_of_another_customer_is_rejected(dust: Any) -> None:
    from dust.models import Order

    with session_scope() as session:
        session.add(Order(order_id="order_1", customer_id="cus_other"))
    result = dust.process(ORDER)
    assert result.status == "rejected" and "cus_other" in result.reason
    assert dust.count("dust_accounts") == 0 and dust.count("dust_entries") == 0
    with session_scope() as session:
        order = session.get(Order, "order_1")
        assert order is not None and order.placed_event_id is None


def test_unknown_event_names_are_ignored(dust: Any) -> None:
    result = dust.process({"id": "evt_x", "name": "inventory.updated", "data": {"id": "i"}})
    assert result.status == "ignored"
    assert "inventory.updated" in result.reason
    assert dust.event("evt_x").status == "ignored"
    assert {t: n for t, n in dust.counts().items() if n} == {"dust_events": 1}


def test_id_is_derived_from_name_and_data_id_when_absent(dust: Any) -> None:
    envelope = {"name": "customer.created", "data": {"id": "cus_1"}}
    result = dust.process(envelope)
    assert (result.event_id, result.status) == ("customer.created:cus_1", "processed")
    assert dust.event("customer.created:cus_1").name == "customer.created"
    assert dust.process(envelope).status == "duplicate"
    # another payload under the derived id is a conflict, not a second effect
    changed = {"name": "customer.created", "data": {"id": "cus_1", "email": "x@example.com"}}
    assert dust.process(changed).status == "conflict"


def test_occurred_at_defaults_to_the_time_received(dust: Any) -> None:
    envelope = {key: value for key, value in ORDER.items() if key != "occurred_at"}
    before = datetime.now(UTC)
    dust.process(envelope)
    after = datetime.now(UTC)
    [(expires, _, _)] = dust.lots("cus_1")
    assert before + timedelta(days=365) <= expires <= after + timedelta(days=365)


def test_unknown_extra_fields_are_ignored(dust: Any) -> None:
    envelope = {**with_data(loyalty_tier="gold"), "source": "medusa"}
    assert dust.process(envelope).status == "processed"
    assert dust.dust("cus_1") == 100


def test_a_failed_event_is_retried_on_redelivery(dust: Any) -> None:
    from dust.tasks.inbox import record_failed

    record_failed(ORDER, OperationalError("SELECT 1", {}, Exception("server closed")))
    failed = dust.event("evt_01")
    assert failed.status == "failed" and "OperationalError" in failed.reason
    assert dust.count("dust_entries") == 0

    result = dust.process(ORDER)

    assert result.status == "processed", result.reason
    assert dust.event("evt_01").attempts == 2
    assert dust.dust("cus_1") == 100
