"""``order.placed`` through the real entry point (``dust.tasks.inbox.process``): earning dust
(docs/CONTRACT.md §3.3.3, step 2 "Earn")."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from dust.models import Order

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def order_row(order_id: str) -> Order:
    from dust.worker.db import session_scope

    with session_scope() as session:
        row = session.get(Order, order_id)
        assert row is not None
        return row


def test_contract_example_earns_one_lot_expiring_a_year_after_the_event(dust: Any) -> None:
    result = dust.order("order_1", "cus_1", 10999, shipping_total=999, cart_id="cart_1")

    assert result.status == "processed", result.reason
    assert result.detail["earned"] == 100
    assert dust.balance("cus_1") == {
        "customer_id": "cus_1",
        "dust": {"balance": 100, "held": 0, "pending": 0, "available": 100},
        "store_credit": [],
    }
    assert dust.lots("cus_1") == [(T0 + timedelta(days=365), 100, 100)]
    [earn] = dust.entries(reason="earn")
    assert (earn.direction, earn.amount, earn.balance_after) == ("credit", 100, 100)
    assert (earn.reference_type, earn.reference_id, earn.event_id) == (
        "order",
        "order_1",
        result.event_id,
    )
    event = dust.event(result.event_id)
    assert event.status == "processed" and event.occurred_at == T0
    assert json.loads(event.detail)["earned"] == 100


def test_lot_expiry_follows_the_events_occurred_at(dust: Any, configure: Any) -> None:
    configure(DUST_POINTS_TTL_DAYS="30")
    later = datetime(2027, 3, 1, 8, 30, tzinfo=UTC)
    dust.order("order_1", "cus_1", 10000, occurred_at=later)
    assert dust.lots("cus_1") == [(later + timedelta(days=30), 100, 100)]


def test_ttl_zero_lots_never_expire(dust: Any, configure: Any) -> None:
    configure(DUST_POINTS_TTL_DAYS="0")
    dust.order("order_1", "cus_1", 10000)
    assert dust.lots("cus_1") == [(None, 100, 100)]


def test_without_items_tax_and_shipping_do_not_earn(dust: Any) -> None:
    dust.order("order_1", "cus_1", 12000, shipping_total=999, tax_total=1001)
    assert dust.dust("cus_1") == 100


def test_dust_only_products_are_not_eligible(dust: Any) -> None:
    dust.send("product.created", {"id": "prod_dust", "metadata": {"dust_only": True}})
    dust.send("product.created", {"id": "prod_plain", "metadata": {"dust_only": False}})
    items = [
        {"id": "item_1", "product_id": "prod_plain", "quantity": 2, "total": 10000},
        {"id": "item_2", "product_id": "prod_dust", "quantity": 1, "total": 4000},
        {"id": "item_3", "product_id": "prod_unknown", "quantity": 1, "total": 2000},
        {"id": "item_4", "quantity": 1, "total": 500},
    ]
    # items decide the base (within what the goods cost: 17999 - 1499 here)
    result = dust.order("order_1", "cus_1", 17999, shipping_total=1499, items=items)
    assert result.status == "processed", result.reason
    assert dust.dust("cus_1") == 125  # (10000 + 2000 + 500) * 0.01


def test_a_later_product_update_wins_and_an_older_one_is_ignored(dust: Any) -> None:
    dust.send("product.created", {"id": "prod_1", "metadata": {"dust_only": True}})
    old = dust.send(
        "product.updated",
        {"id": "prod_1", "metadata": {"dust_only": False}},
        occurred_at=T0 - timedelta(days=1),
    )
    assert old.status == "ignored"
    items = [{"product_id": "prod_1", "total": 10000}]
    dust.order("order_1", "cus_1", 10000, items=items)
    assert dust.dust("cus_1") == 0
    dust.send(
        "product.updated",
        {"id": "prod_1", "metadata": {"dust_only": False}},
        occurred_at=T0 + timedelta(days=1),
    )
    dust.order("order_2", "cus_1", 10000, items=items)
    assert dust.dust("cus_1") == 100


def test_store_credit_spent_on_the_order_does_not_earn(dust: Any) -> None:
    dust.grant("cus_1", 3000, kind="store_credit", currency="usd")
    result = dust.order("order_1", "cus_1", 10999, shipping_total=999, store_credit_total=3000)
    assert result.status == "processed", result.reason
    assert dust.dust("cus_1") == 70  # floor((10000 - 3000) * 0.01)
    assert dust.store_credit("cus_1") == 0


def test_guest_orders_earn_nothing(dust: Any) -> None:
    result = dust.order("order_1", None, 10999, shipping_total=999)
    assert result.status == "processed", result.reason
    assert result.detail["earned"] == 0
    assert dust.count("dust_accounts") == 0
    assert dust.count("dust_entries") == 0
    assert order_row("order_1").no_earn_reason == "guest order"


def test_zero_base_earns_nothing_and_says_why(dust: Any) -> None:
    dust.order("order_1", "cus_1", 99)  # floor(99 * 0.01) == 0
    assert dust.dust("cus_1") == 0
    assert dust.count("dust_lots") == 0
    assert order_row("order_1").no_earn_reason == "earning base is zero"


def test_per_currency_rate_override(dust: Any, configure: Any) -> None:
    configure(DUST_EARN_RATES='{"JPY": "1"}', DUST_EARN_RATE="0.015")
    jpy = {"id": "order_jpy", "customer_id": "cus_1", "currency_code": "JPY", "total": 1500}
    dust.send("order.placed", jpy)
    assert dust.dust("cus_1") == 1500
    dust.order("order_usd", "cus_2", 999)
    assert dust.dust("cus_2") == 14  # floor(999 * 0.015): exact decimal, floored
    assert order_row("order_jpy").currency_code == "jpy"
    assert order_row("order_jpy").earn_rate == "1"


def test_the_rate_in_force_at_placement_is_kept_for_clawbacks(dust: Any, configure: Any) -> None:
    dust.order("order_1", "cus_1", 10000)
    configure(DUST_EARN_RATE="0.5")
    dust.refund("ref_1", "order_1", 5000)
    assert dust.dust("cus_1") == 50


def test_a_second_order_placed_for_the_same_order_is_ignored(dust: Any) -> None:
    dust.order("order_1", "cus_1", 10000)
    again = dust.order("order_1", "cus_1", 20000)
    assert again.status == "ignored"
    assert dust.dust("cus_1") == 100


def test_a_customer_with_no_accounts_has_zeros(dust: Any) -> None:
    assert dust.balance("nobody") == {
        "customer_id": "nobody",
        "dust": {"balance": 0, "held": 0, "pending": 0, "available": 0},
        "store_credit": [],
    }


def test_history_lists_entries_newest_first(dust: Any) -> None:
    from dust.ledger import reports
    from dust.worker.db import session_scope

    dust.order("order_1", "cus_1", 10000)
    dust.refund("ref_1", "order_1", 4000)
    with session_scope() as session:
        rows = reports.history(session, "cus_1")
    assert [(r["kind"], r["reason"], r["amount"], r["balance_after"]) for r in rows] == [
        ("dust", "clawback", 40, 60),
        ("store_credit", "refund", 4000, 4000),
        ("dust", "earn", 100, 100),
    ]


def test_items_never_claim_more_than_the_goods_cost(dust: Any) -> None:
    # Items adding up to 10000 on an order whose goods cost 3000 earn on 3000.
    items = [{"id": "item_1", "total": 6000}, {"id": "item_2", "total": 4000}]
    result = dust.order("order_1", "cus_1", 3500, shipping_total=300, tax_total=200, items=items)
    assert result.status == "processed", result.reason
    assert dust.dust("cus_1") == 30
    assert order_row("order_1").earn_base == 3000


def test_gift_cards_earn_nothing_bought_or_spent(dust: Any) -> None:
    items = [
        {"id": "item_1", "total": 5000, "is_giftcard": True},
        {"id": "item_2", "total": 7000, "is_giftcard": False},
    ]
    raw = {"total": "120.004", "tax_total": "0.004"}
    result = dust.order("order_1", "cus_1", 12000, items=items, gift_card_total=2000, raw=raw)
    assert result.status == "processed", result.reason
    assert dust.dust("cus_1") == 50  # (7000 - 2000) * 0.01
    event = dust.event(result.event_id)
    assert json.loads(event.envelope)["data"]["raw"] == raw  # kept as sent, not used


def test_dust_pays_dust_only_items_first_and_the_rest_earns_nothing(dust: Any) -> None:
    dust.send("product.created", {"id": "prod_dust", "metadata": {"dust_only": True}})
    dust.grant("cus_1", 1000)
    items = [
        {"id": "item_1", "product_id": "prod_dust", "total": 500},
        {"id": "item_2", "product_id": "prod_plain", "total": 2000},
    ]
    # 800 dust worth 800: 500 of it pays the dust-only item, 300 pays for plain goods
    dust.order("order_1", "cus_1", 2500, items=items, dust_total=800)
    assert dust.dust("cus_1") == 1000 - 800 + 17  # floor((2000 - 300) * 0.01)
    # dust worth less than the dust-only items: the plain goods earn in full
    dust.order("order_2", "cus_2", 2500, items=items, dust_total=0)
    assert dust.dust("cus_2") == 20


def test_money_paid_with_dust_earns_nothing_at_the_currency_redeem_value(
    dust: Any, configure: Any
) -> None:
    configure(DUST_REDEEM_VALUE="1", DUST_REDEEM_VALUES='{"usd": "0.333", "eur": "2"}')
    dust.grant("cus_1", 1000)
    # 100 dust worth 33.3 cents: rounded up, 34 cents earn nothing
    dust.order("order_1", "cus_1", 10000, dust_total=100)
    assert order_row("order_1").earn_base == 10000 - 34
    assert order_row("order_1").refund_cap == 10000 - 34  # floor(10000 - 33.3)
    dust.order("order_2", "cus_1", 10000, dust_total=100, currency_code="eur")
    assert order_row("order_2").earn_base == 10000 - 200
    assert dust.dust("cus_1") == 1000 - 200 + 99 + 98
