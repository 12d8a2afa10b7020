"""``refund.created``, ``customer.created`` and the clawback policies, through the real
entry point (docs/CONTRACT.md §3.3.4)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
YEAR = T0 + timedelta(days=365)
#: SC- and four groups of five base32 characters: 20 × 5 = 100 random bits.
CODE = re.compile(r"SC-[A-Z2-7]{5}-[A-Z2-7]{5}-[A-Z2-7]{5}-[A-Z2-7]{5}")


def test_contract_example_refund_to_store_credit_claws_back(dust: Any) -> None:
    dust.order("order_1", "cus_1", 10999, shipping_total=999)
    result = dust.refund("ref_1", "order_1", 5000, customer_id="cus_1")

    assert result.status == "processed", result.reason
    assert result.detail["clawed_back"] == 50
    assert dust.store_credit("cus_1") == 5000
    assert dust.dust("cus_1") == 50  # floor((10000 - 5000) * 0.01)
    [clawback] = dust.entries(reason="clawback")
    assert (clawback.direction, clawback.amount, clawback.reference_id) == ("debit", 50, "order_1")
    [credit] = dust.entries(reason="refund")
    assert (credit.amount, credit.reference_type, credit.reference_id) == (5000, "refund", "ref_1")
    assert dust.lots("cus_1") == [(YEAR, 50, 100)]


def test_net_earned_follows_the_total_refunded(dust: Any) -> None:
    dust.order("order_1", "cus_1", 10999, shipping_total=999)
    dust.refund("ref_1", "order_1", 3333)
    assert dust.dust("cus_1") == 66  # floor(6667 * 0.01)
    dust.refund("ref_2", "order_1", 3333)
    assert dust.dust("cus_1") == 33  # floor(3334 * 0.01)
    dust.refund("ref_3", "order_1", 4333)  # all that was paid: more than the base, floored
    assert dust.dust("cus_1") == 0
    assert dust.store_credit("cus_1") == 10999
    # net = floor(max(0, base - refunded) * rate), never the sum of per-refund floors
    assert sum(e.amount for e in dust.entries(reason="clawback")) == 100


def test_refund_not_to_store_credit_only_claws_back(dust: Any) -> None:
    dust.order("order_1", "cus_1", 10000)
    dust.refund("ref_1", "order_1", 2500, to_store_credit=False)
    assert dust.dust("cus_1") == 75
    assert dust.balance("cus_1")["store_credit"] == []


def test_a_refund_id_seen_before_is_ignored(dust: Any) -> None:
    dust.order("order_1", "cus_1", 10000)
    dust.refund("ref_1", "order_1", 2500)
    again = dust.refund("ref_1", "order_1", 2500)  # same refund, new event id
    assert again.status == "ignored"
    assert dust.store_credit("cus_1") == 2500
    assert dust.dust("cus_1") == 75


def test_refund_in_another_currency_than_the_order_is_rejected(dust: Any) -> None:
    dust.order("order_1", "cus_1", 10000)
    before = dust.counts()
    result = dust.refund("ref_1", "order_1", 2500, currency_code="EUR")
    assert result.status == "rejected"
    assert "currency" in result.reason
    assert dust.counts() == before | {"dust_events": before["dust_events"] + 1}
    assert dust.dust("cus_1") == 100


def test_refund_before_order_converges_with_order_then_refund(dust: Any) -> None:
    dust.order("order_a", "cus_a", 10999, shipping_total=999)
    dust.refund("ref_a", "order_a", 5000)

    early = dust.refund("ref_b", "order_b", 5000)
    assert early.status == "processed", early.reason
    assert early.detail["waiting_for_order"] is True
    assert dust.count("dust_entries") == 3  # only order_a's: the owner of ref_b is unknown
    dust.order("order_b", "cus_b", 10999, shipping_total=999)

    assert dust.snapshot("cus_b") == dust.snapshot("cus_a")
    assert dust.snapshot("cus_b")["lots"] == [(YEAR, 50)]
    assert dust.store_credit("cus_b") == 5000


def test_a_refund_naming_its_customer_waits_for_its_order_all_the_same(dust: Any) -> None:
    # Its caps (what the order was paid) are not known before the order: nothing credited.
    early = dust.refund("ref_1", "order_1", 5000, customer_id="cus_1")
    assert early.status == "processed" and early.detail["waiting_for_order"] is True
    assert dust.count("dust_entries") == 0
    dust.order("order_1", "cus_1", 10999, shipping_total=999)
    assert dust.store_credit("cus_1") == 5000
    assert dust.dust("cus_1") == 50


def test_guest_refund_opens_an_anonymous_account_once_the_order_arrives(dust: Any) -> None:
    waiting = dust.refund("ref_1", "order_1", 5000)
    assert waiting.detail["waiting_for_order"] is True
    assert dust.count("dust_accounts") == 0

    placed = dust.order("order_1", None, 10999, shipping_total=999)

    assert placed.status == "processed", placed.reason
    [credit] = placed.detail["refund_credits"]
    [account] = dust.accounts()
    assert account.customer_id is None and account.kind == "store_credit"
    assert (account.currency_code, account.balance, account.code) == (
        "usd",
        5000,
        credit["account_code"],
    )
    assert CODE.fullmatch(account.code), account.code
    event = dust.event(placed.event_id)
    assert json.loads(event.detail)["refund_credits"][0]["account_code"] == account.code
    # a refund of a guest order that is already placed is credited at once, on a new code
    later = dust.refund("ref_2", "order_1", 1000)
    codes = {a.code for a in dust.accounts()}
    assert len(codes) == 2 and later.detail["refund_credits"][0]["account_code"] in codes
    assert dust.count("dust_lots") == 0  # guests never earn


def test_store_credit_codes_do_not_repeat(dust: Any) -> None:
    for n in range(20):
        dust.order(f"order_{n}", None, 100)
        dust.refund(f"ref_{n}", f"order_{n}", 100)
    codes = [a.code for a in dust.accounts()]
    assert len(codes) == len(set(codes)) == 20
    assert all(CODE.fullmatch(code) for code in codes)


def test_clamp_policy_forgives_what_is_not_there(dust: Any, configure: Any) -> None:
    configure(DUST_CLAWBACK_POLICY="clamp")
    dust.order("order_1", "cus_1", 10000)  # earns 100
    dust.order("order_2", "cus_1", 0, dust_total=80)  # spends 80 of it

    result = dust.refund("ref_1", "order_1", 10000)

    assert result.status == "processed", result.reason
    assert dust.balance("cus_1")["dust"] == {"balance": 0, "held": 0, "pending": 0, "available": 0}
    [clawback] = dust.entries(reason="clawback")
    assert (clawback.amount, clawback.forgiven, clawback.balance_after) == (20, 80, 0)
    # nothing left to take at all: forgiven on the order, no entry
    dust.order("order_3", "cus_1", 5000)  # earns 50
    dust.order("order_4", "cus_1", 0, dust_total=50)
    dust.refund("ref_3", "order_3", 5000)
    assert dust.dust("cus_1") == 0
    assert len(dust.entries(reason="clawback")) == 1


def test_clamp_policy_does_not_take_held_dust(dust: Any, configure: Any) -> None:
    configure(DUST_CLAWBACK_POLICY="clamp")
    dust.order("order_1", "cus_1", 10000)
    dust.reserve("cus_1", "cart_1", 70)
    dust.refund("ref_1", "order_1", 10000)
    assert dust.balance("cus_1")["dust"] == {
        "balance": 70,
        "held": 70,
        "pending": 0,
        "available": 0,
    }
    [clawback] = dust.entries(reason="clawback")
    assert (clawback.amount, clawback.forgiven) == (30, 70)


def test_debt_policy_takes_the_balance_negative_and_later_earnings_repay(dust: Any) -> None:
    dust.order("order_1", "cus_1", 10000)  # earns 100
    dust.order("order_2", "cus_1", 0, dust_total=80)
    dust.refund("ref_1", "order_1", 10000)
    assert dust.dust("cus_1") == -80
    assert dust.lots("cus_1") == []
    dust.order("order_3", "cus_1", 10000, occurred_at=T0 + timedelta(days=1))  # earns 100
    assert dust.dust("cus_1") == 20
    assert dust.lots("cus_1") == [(YEAR + timedelta(days=1), 20, 20)]


def test_customer_created_opens_the_dust_account(dust: Any) -> None:
    result = dust.send("customer.created", {"id": "cus_1", "email": "a@example.com"})
    assert result.status == "processed", result.reason
    assert [(a.customer_id, a.kind, a.balance) for a in dust.accounts()] == [("cus_1", "dust", 0)]
    # customer.updated and repeats open nothing more
    dust.send("customer.updated", {"id": "cus_1", "group_ids": ["vip"]})
    assert dust.count("dust_accounts") == 1


def test_customer_created_with_a_default_currency_opens_store_credit(
    dust: Any, configure: Any
) -> None:
    configure(DUST_DEFAULT_CURRENCY="EUR")
    dust.send("customer.created", {"id": "cus_1"})
    balance = dust.balance("cus_1")
    assert balance["dust"] == {"balance": 0, "held": 0, "pending": 0, "available": 0}
    [store_credit] = balance["store_credit"]
    assert store_credit["currency_code"] == "eur" and store_credit["balance"] == 0
    assert CODE.fullmatch(store_credit["code"])
    # a refund in that currency lands in the same account
    dust.order("order_1", "cus_1", 1000, currency_code="eur")
    dust.refund("ref_1", "order_1", 700, currency_code="eur")
    [store_credit] = dust.balance("cus_1")["store_credit"]
    assert (
        store_credit["balance"] == 700
        and store_credit["code"] == balance["store_credit"][0]["code"]
    )


# -- the refund guard and returns of items paid with dust ------------------------------


def test_refunds_never_add_up_to_more_than_the_order_was_paid(dust: Any, configure: Any) -> None:
    configure(DUST_REDEEM_VALUES='{"usd": "0.5"}')
    dust.grant("cus_1", 10)
    # paid 1001 - 3 dust x 0.5 = 999.5 in money and store credit: refunds may reach 999
    dust.order("order_1", "cus_1", 1001, dust_total=3)
    assert dust.refund("ref_1", "order_1", 600).status == "processed"

    held = dust.refund("ref_2", "order_1", 400)

    assert held.status == "needs_attention"
    assert "1000" in held.reason and "999" in held.reason, held.reason
    assert dust.store_credit("cus_1") == 600  # nothing credited for it
    assert dust.dust("cus_1") == 10 - 3 + 3  # floor((1001 - 2 - 600) * 0.01): no clawback for it
    assert dust.entries(reason="refund")[0].reference_id == "ref_1"
    # an explicit replay keeps it held; one that fits is applied
    from dust.inbox import process

    envelope = json.loads(dust.event(held.event_id).envelope)
    replay = process(envelope, replay=True)
    assert (replay.status, replay.reason) == ("needs_attention", held.reason)
    assert dust.store_credit("cus_1") == 600
    assert dust.refund("ref_3", "order_1", 399).status == "processed"
    assert dust.store_credit("cus_1") == 999
    assert dust.refund("ref_4", "order_1", 1).status == "needs_attention"
    assert dust.store_credit("cus_1") == 999


def test_a_refund_before_its_order_is_checked_when_the_order_arrives(dust: Any) -> None:
    assert dust.refund("ref_1", "order_1", 700, customer_id="cus_1").status == "processed"
    assert dust.refund("ref_2", "order_1", 500, customer_id="cus_1").status == "processed"
    assert dust.count("dust_entries") == 0

    placed = dust.order("order_1", "cus_1", 1000)

    assert placed.status == "needs_attention"
    assert list(placed.detail["refunds_held"]) == ["ref_2"]
    assert dust.store_credit("cus_1") == 700
    assert dust.dust("cus_1") == 3  # floor((1000 - 700) * 0.01)


def test_returns_give_dust_back_once_within_what_the_order_charged(dust: Any) -> None:
    dust.grant("cus_1", 1000, expires_at=YEAR)
    dust.order("order_1", "cus_1", 5000, dust_total=300)
    assert dust.dust("cus_1") == 700 + 47  # floor((5000 - 300) * 0.01)

    back = dust.refund("ref_1", "order_1", 0, dust_amount=100)

    assert back.status == "processed", back.reason
    assert back.detail["dust_returned"] == 100
    assert dust.dust("cus_1") == 847
    [given] = dust.entries(reason="return")
    assert (given.direction, given.amount, given.reference_id) == ("credit", 100, "ref_1")
    assert dust.store_credit("cus_1") == 0 and dust.count("dust_refunds") == 1
    # back to the lot it was spent from
    assert sorted(dust.lots("cus_1")) == [(YEAR, 47, 47), (YEAR, 800, 1000)]

    over = dust.refund("ref_2", "order_1", 0, dust_amount=201)
    assert over.status == "needs_attention" and "301" in over.reason, over.reason
    assert dust.dust("cus_1") == 847
    assert dust.refund("ref_3", "order_1", 1000, dust_amount=200).status == "processed"
    assert dust.dust("cus_1") == 1000 + 37  # all dust back; floor((4700 - 1000) * 0.01)
    assert dust.store_credit("cus_1") == 1000

    canceled = dust.cancel("order_1")  # nothing of the dust is left to give back
    assert canceled.detail["returned"] == 0
    assert dust.dust("cus_1") == 1000


def test_a_cancel_before_a_return_gives_the_dust_back_once(dust: Any) -> None:
    for customer, order in (("cus_a", "order_a"), ("cus_b", "order_b")):
        dust.grant(customer, 1000, expires_at=YEAR)
        dust.order(order, customer, 5000, dust_total=300)
    dust.refund("ref_a", "order_a", 0, dust_amount=120)
    dust.cancel("order_a")
    dust.cancel("order_b")
    late = dust.refund("ref_b", "order_b", 0, dust_amount=120)
    assert late.status == "processed" and "dust_returned" not in late.detail
    assert dust.snapshot("cus_a") == dust.snapshot("cus_b")
    assert dust.dust("cus_b") == 1000


def test_a_refund_of_nothing_is_rejected(dust: Any) -> None:
    dust.order("order_1", "cus_1", 1000)
    result = dust.refund("ref_1", "order_1", 0)
    assert result.status == "rejected" and "dust_amount" in result.reason
    negative = dust.refund("ref_2", "order_1", 10, dust_amount=-1)
    assert negative.status == "rejected"


def test_order_refunds_show_each_refund_and_its_code(dust: Any, session: Any) -> None:
    from dust.ledger.charging import refunds_of

    dust.refund("ref_0", "order_1", 300)  # a guest's, before the order
    before = refunds_of(session, "order_1")
    assert [(r["status"], r["code"], r["store_credit"]) for r in before] == [
        ("waiting_for_order", None, 0)
    ]
    session.rollback()
    dust.order("order_1", None, 1000)
    dust.refund("ref_1", "order_1", 800)
    [first, second] = refunds_of(session, "order_1")
    assert first["status"] == "applied" and CODE.fullmatch(first["code"])
    assert first["store_credit"] == 300 and first["dust"] == 0
    assert second["status"] == "needs_attention" and second["code"] is None
    assert "1100" in second["reason"]
    assert set(first) == {
        "refund_id",
        "amount",
        "dust_amount",
        "currency_code",
        "to_store_credit",
        "status",
        "reason",
        "code",
        "store_credit",
        "dust",
    }
