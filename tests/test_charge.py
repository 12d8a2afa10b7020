"""``order.placed`` step 1 (Charge) and ``order.canceled``: holds captured, remainders
debited, shortfalls reported, charges given back (docs/CONTRACT.md §3.3.3, §3.3.5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from dust.models import Hold, Lot, LotMovement
from dust.worker.db import session_scope

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def hold_states(cart_id: str) -> list[tuple[str, int, int]]:
    with session_scope() as session:
        rows = session.execute(
            select(Hold.status, Hold.amount, Hold.captured)
            .where(Hold.cart_id == cart_id)
            .order_by(Hold.id)
        ).all()
    return [tuple(row) for row in rows]


def test_cart_hold_captured_in_part_and_the_rest_released(dust: Any) -> None:
    dust.grant("cus_1", 1000)
    assert dust.reserve("cus_1", "cart_1", 500).status == "reserved"
    result = dust.order("order_1", "cus_1", 10000, cart_id="cart_1", dust_total=300)

    assert result.status == "processed", result.reason
    assert result.detail["captured"] == {"dust": 300}
    assert hold_states("cart_1") == [("captured", 500, 300)]
    # 1000 - 300 charged + floor((10000 - 300 paid with dust) * 0.01)
    assert dust.balance("cus_1")["dust"] == {
        "balance": 797,
        "held": 0,
        "pending": 0,
        "available": 797,
    }
    [spend] = dust.entries(reason="spend")
    assert (spend.direction, spend.amount, spend.reference_id) == ("debit", 300, "order_1")


def test_store_credit_hold_captured(dust: Any) -> None:
    dust.grant("cus_1", 5000, kind="store_credit", currency="usd")
    dust.reserve("cus_1", "cart_1", 2000, kind="store_credit", currency="usd")
    result = dust.order("order_1", "cus_1", 10000, cart_id="cart_1", store_credit_total=2000)
    assert result.status == "processed", result.reason
    assert result.detail["captured"] == {"store_credit": 2000}
    assert dust.store_credit("cus_1") == 3000
    assert dust.balance("cus_1")["store_credit"][0]["held"] == 0
    assert dust.dust("cus_1") == 80  # (10000 - 2000) * 0.01


def test_remainder_beyond_the_hold_is_debited_directly(dust: Any) -> None:
    dust.grant("cus_1", 1000)
    dust.reserve("cus_1", "cart_1", 100)
    result = dust.order("order_1", "cus_1", 0, cart_id="cart_1", dust_total=250)
    assert result.status == "processed", result.reason
    assert result.detail["captured"] == {"dust": 100}
    assert result.detail["debited"] == {"dust": 150}
    assert dust.dust("cus_1") == 750


def test_no_hold_at_all_debits_directly(dust: Any) -> None:
    dust.grant("cus_1", 1000)
    result = dust.order("order_1", "cus_1", 0, dust_total=400)
    assert result.detail["debited"] == {"dust": 400}
    assert dust.dust("cus_1") == 600


def test_shortfall_is_needs_attention_and_nothing_is_invented(dust: Any) -> None:
    dust.grant("cus_1", 200)
    result = dust.order("order_1", "cus_1", 10000, dust_total=500, store_credit_total=700)

    assert result.status == "needs_attention"
    assert "300 dust" in result.reason and "700 store_credit" in result.reason
    assert result.detail["shortfall"] == {"dust": 300, "store_credit": 700}
    event = dust.event(result.event_id)
    assert event.status == "needs_attention" and "300 dust" in event.reason
    # the 200 dust there were charged, nothing more; earning still happened:
    # floor((10000 - 700 store credit - 500 dust the order says it paid) * 0.01) = 88
    assert [e.amount for e in dust.entries(reason="spend")] == [200]
    assert dust.dust("cus_1") == 88
    assert dust.store_credit("cus_1") == 0


def test_holds_of_other_carts_and_customers(dust: Any) -> None:
    dust.grant("cus_1", 1000)
    dust.grant("cus_2", 1000)
    dust.reserve("cus_1", "cart_1", 100)
    dust.reserve("cus_1", "cart_other", 200)
    dust.reserve("cus_2", "cart_1", 300)  # someone else's hold on the same cart id
    result = dust.order("order_1", "cus_1", 0, cart_id="cart_1", dust_total=100)

    assert result.status == "processed", result.reason
    assert hold_states("cart_1") == [("captured", 100, 100), ("released", 300, 0)]
    assert hold_states("cart_other") == [("active", 200, 0)]
    assert dust.balance("cus_1")["dust"] == {
        "balance": 900,
        "held": 200,
        "pending": 0,
        "available": 700,
    }
    assert dust.balance("cus_2")["dust"] == {
        "balance": 1000,
        "held": 0,
        "pending": 0,
        "available": 1000,
    }


def test_an_order_charging_nothing_releases_its_cart_holds(dust: Any) -> None:
    dust.grant("cus_1", 1000)
    dust.reserve("cus_1", "cart_1", 100)
    dust.order("order_1", "cus_1", 0, cart_id="cart_1")
    assert hold_states("cart_1") == [("released", 100, 0)]
    assert dust.balance("cus_1")["dust"]["held"] == 0


def test_capture_after_a_clawback_took_the_held_dust_is_a_shortfall(dust: Any) -> None:
    # The hold was placed on dust a refund then clawed back (debt policy): the capture
    # cannot take dust that is not there, and must say so instead of failing the event.
    dust.order("order_1", "cus_1", 10000)  # earns 100
    dust.reserve("cus_1", "cart_2", 60)
    dust.refund("ref_1", "order_1", 10000)  # claws back 100: balance 0, held 60
    assert dust.balance("cus_1")["dust"] == {
        "balance": 0,
        "held": 60,
        "pending": 0,
        "available": -60,
    }

    result = dust.order("order_2", "cus_1", 0, cart_id="cart_2", dust_total=60)

    assert result.status == "needs_attention"
    assert result.detail["shortfall"] == {"dust": 60}
    assert dust.balance("cus_1")["dust"] == {"balance": 0, "held": 0, "pending": 0, "available": 0}
    assert [s for s, _, _ in hold_states("cart_2")] == ["released"]


def test_replaying_a_shortfall_charges_what_is_now_available(dust: Any) -> None:
    dust.grant("cus_1", 200)
    envelope = {
        "id": "evt_order_1",
        "name": "order.placed",
        "occurred_at": T0.isoformat(),
        "data": {"id": "order_1", "customer_id": "cus_1", "currency_code": "usd", "total": 0}
        | {"dust_total": 500},
    }
    from dust.tasks.inbox import process

    assert process(envelope).status == "needs_attention"
    assert process(envelope).status == "duplicate"  # a redelivery does not retry it
    dust.grant("cus_1", 300)

    replayed = process(envelope, replay=True)

    assert replayed.status == "processed", replayed.reason
    assert dust.dust("cus_1") == 0
    assert len(dust.entries(reason="spend")) == 2
    assert dust.event("evt_order_1").attempts == 2
    # once processed, a replay changes nothing
    assert process(envelope, replay=True).status == "duplicate"
    assert dust.dust("cus_1") == 0


# -- cancel ----------------------------------------------------------------------------


def lot_remaining(customer_id: str) -> dict[Any, int]:
    return {expires: remaining for expires, remaining, _ in dust_lots(customer_id)}


def dust_lots(customer_id: str) -> list[tuple[Any, int, int]]:
    from dust.models import Account

    with session_scope() as session:
        rows = session.execute(
            select(Lot.expires_at, Lot.remaining, Lot.amount)
            .join(Account, Account.id == Lot.account_id)
            .where(Account.customer_id == customer_id)
            .order_by(Lot.id)
        ).all()
    return [tuple(row) for row in rows]


def test_cancel_returns_dust_to_the_lots_it_came_from_and_store_credit(dust: Any) -> None:
    soon, late = T0 + timedelta(days=10), T0 + timedelta(days=100)
    dust.grant("cus_1", 100, expires_at=late)
    dust.grant("cus_1", 50, expires_at=soon)
    dust.grant("cus_1", 4000, kind="store_credit", currency="usd")
    dust.reserve("cus_1", "cart_1", 70)
    placed = dust.order(
        "order_1", "cus_1", 10000, cart_id="cart_1", dust_total=120, store_credit_total=1000
    )
    assert placed.status == "processed", placed.reason
    # 120 drawn: 50 from the soon lot, 70 from the late one; earned (10000 - 1000 - 120) * 0.01
    assert lot_remaining("cus_1") == {soon: 0, late: 30, T0 + timedelta(days=365): 88}

    canceled = dust.cancel("order_1")

    assert canceled.status == "processed", canceled.reason
    assert canceled.detail == {"returned": 1120, "clawed_back": 88}
    assert lot_remaining("cus_1") == {soon: 50, late: 100, T0 + timedelta(days=365): 0}
    assert dust.balance("cus_1")["dust"] == {
        "balance": 150,
        "held": 0,
        "pending": 0,
        "available": 150,
    }
    assert dust.store_credit("cus_1") == 4000
    # every returned dust went back through a recorded movement, to the lots it came from
    with session_scope() as session:
        given_back = session.execute(
            select(Lot.expires_at, LotMovement.amount)
            .join(Lot, Lot.id == LotMovement.lot_id)
            .where(LotMovement.entry_id.in_([e.id for e in dust.entries(reason="cancel")]))
        ).all()
    returned_to: dict[Any, int] = {}
    for expires, amount in given_back:
        returned_to[expires] = returned_to.get(expires, 0) + amount
    assert returned_to == {soon: 50, late: 70}
    assert len(dust_lots("cus_1")) == 3  # no new lot was opened for the returned dust


def test_cancel_twice_is_ignored(dust: Any) -> None:
    dust.grant("cus_1", 100)
    dust.order("order_1", "cus_1", 10000, dust_total=100)
    assert dust.cancel("order_1").status == "processed"
    assert dust.send("order.canceled", {"id": "order_1"}).status == "ignored"
    assert dust.dust("cus_1") == 100


def test_cancel_before_the_order_charges_and_earns_nothing(dust: Any) -> None:
    dust.grant("cus_1", 500)
    dust.reserve("cus_1", "cart_1", 200)
    early = dust.cancel("order_1")
    assert early.status == "processed" and early.detail["waiting_for_order"] is True

    placed = dust.order("order_1", "cus_1", 10000, cart_id="cart_1", dust_total=200)

    assert placed.status == "processed", placed.reason
    assert placed.detail["canceled"] is True
    assert dust.balance("cus_1")["dust"] == {
        "balance": 500,
        "held": 0,
        "pending": 0,
        "available": 500,
    }
    assert hold_states("cart_1") == [("released", 200, 0)]
    assert dust.entries(reason="spend") == [] and dust.entries(reason="earn") == []
