"""Checkout requests with a reply (docs/CONTRACT.md §5.1) through real workers and the
result backend."""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from decimal import Decimal
from typing import Any

import pytest

from .support import BIN, worker_env

pytestmark = [pytest.mark.services, pytest.mark.e2e]


def earn(dust, envelope, customer: str, amount: int) -> None:
    """Give ``customer`` exactly ``amount`` dust with one order (rate 0.01, no items)."""
    data = {
        "id": f"order_earn_{customer}",
        "customer_id": customer,
        "currency_code": "usd",
        "total": amount * 100,
    }
    (row,) = dust.apply(envelope("order.placed", data)).values()
    assert row["status"] == "processed" and row["detail"]["earned"] == amount, row


#: The account and the sum of its active holds, read in one statement (one snapshot).
SAMPLE = """
SELECT a.balance, a.held,
       (SELECT COALESCE(SUM(h.amount), 0) FROM dust_holds h
        WHERE h.account_id = a.id AND h.status = 'active') AS active
FROM dust_accounts a WHERE a.customer_id = :c AND a.kind = 'dust'
"""


def is_int(value: object) -> bool:
    return type(value) is int


def test_reserve_release_balance_replies(dust, envelope, uid):
    customer = f"cus_{uid}"
    earn(dust, envelope, customer, 100)

    reserved = dust.request(
        "reserve", cart_id=f"cart_{uid}_a", customer_id=customer, amount=30, kind="dust"
    )
    assert set(reserved) == {"status", "hold_id", "amount", "available", "redeem_value"}
    assert reserved["status"] == "reserved" and reserved["redeem_value"] == "1"
    assert is_int(reserved["hold_id"]) and reserved["amount"] == 30
    assert reserved["available"] == 70

    # Same cart, kind and amount: the same hold, nothing changes.
    again = dust.request(
        "reserve", cart_id=f"cart_{uid}_a", customer_id=customer, amount=30, kind="dust"
    )
    assert again == reserved

    # Same cart, other amount: the hold is replaced.
    replaced = dust.request(
        "reserve", cart_id=f"cart_{uid}_a", customer_id=customer, amount=50, kind="dust"
    )
    assert replaced["status"] == "reserved" and replaced["amount"] == 50
    assert replaced["available"] == 50 and replaced["hold_id"] != reserved["hold_id"]

    refused = dust.request(
        "reserve", cart_id=f"cart_{uid}_b", customer_id=customer, amount=51, kind="dust"
    )
    assert refused == {
        "status": "rejected",
        "reason": "insufficient_funds",
        "available": 50,
        "redeem_value": "1",
    }

    no_credit = dust.request(
        "reserve",
        cart_id=f"cart_{uid}_b",
        customer_id=customer,
        amount=1,
        kind="store_credit",
        currency_code="USD",
    )
    assert no_credit == {"status": "rejected", "reason": "insufficient_funds", "available": 0}

    balance = dust.request("balance", customer_id=customer)
    assert set(balance) == {"customer_id", "dust", "store_credit", "redeem_values"}
    assert balance["redeem_values"] == {"default": "1", "jpy": "0.5", "kwd": "12.5"}
    assert balance["customer_id"] == customer
    assert balance["dust"] == {"balance": 100, "held": 50, "pending": 0, "available": 50}
    for account in balance["store_credit"]:
        assert set(account) == {"currency_code", "code", "balance", "held", "available"}
        assert account["currency_code"] == "usd"
        assert all(is_int(account[k]) for k in ("balance", "held", "available"))

    released = dust.request("release", cart_id=f"cart_{uid}_a")
    assert released == {"status": "released", "amount": 50}
    assert dust.request("release", cart_id=f"cart_{uid}_a") == {"status": "released", "amount": 0}
    assert dust.request("balance", customer_id=customer)["dust"] == {
        "balance": 100,
        "held": 0,
        "pending": 0,
        "available": 100,
    }

    assert dust.request("balance", customer_id=f"nobody_{uid}") == {
        "customer_id": f"nobody_{uid}",
        "dust": {"balance": 0, "held": 0, "pending": 0, "available": 0},
        "store_credit": [],
        "redeem_values": {"default": "1", "jpy": "0.5", "kwd": "12.5"},
    }
    # A malformed request is answered (not retried, not crashing the worker).
    bad = dust.request("reserve", cart_id="c", customer_id=customer, amount="10", kind="dust")
    assert bad["status"] == "rejected"
    assert dust.journal_disagreements() == []


def test_two_workers_racing_reserves_never_overdraw(dust, workers, envelope, uid):
    customer = f"cus_{uid}"
    balance = 1000
    earn(dust, envelope, customer, balance)
    amounts = list(itertools.islice(itertools.cycle([10, 25, 40, 55, 70, 85]), 90))

    marks = {w.name: w.log_size() for w in workers.workers}
    # Publish every request first, then collect: both workers (2 processes each) race.
    pending = [
        (
            amount,
            dust.send_request(
                "reserve",
                cart_id=f"cart_{uid}_{n}",
                customer_id=customer,
                amount=amount,
                kind="dust",
            ),
        )
        for n, amount in enumerate(amounts)
    ]
    # While they run: the account's active holds never exceed its balance.
    samples = 0
    deadline = time.monotonic() + 60
    while not all(result.ready() for _, result in pending):
        state = dust.rows(SAMPLE, c=customer)[0]
        assert state["balance"] == balance, state
        assert 0 <= state["held"] == state["active"] <= balance, state
        samples += 1
        assert time.monotonic() < deadline, "reservations not answered in 60 s"
        time.sleep(0.01)
    replies = [(amount, result.get(timeout=10)) for amount, result in pending]

    reserved = [a for a, r in replies if r["status"] == "reserved"]
    rejected = [a for a, r in replies if r["status"] == "rejected"]
    assert len(reserved) + len(rejected) == len(amounts), replies
    assert all(r["reason"] == "insufficient_funds" for _, r in replies if r["status"] == "rejected")
    assert all(r["available"] >= 0 for _, r in replies), replies
    assert all(r["amount"] == a for a, r in replies if r["status"] == "reserved")
    assert sum(reserved) <= balance
    assert rejected, "the requests asked for more than the balance; some must be refused"

    state = dust.dust(customer)
    assert state["balance"] == balance
    assert state["held"] == sum(reserved)
    assert state["available"] >= 0
    active = dust.scalar(
        "SELECT COALESCE(SUM(h.amount), 0) FROM dust_holds h"
        " JOIN dust_accounts a ON a.id = h.account_id"
        " WHERE a.customer_id = :c AND h.status = 'active'",
        c=customer,
    )
    assert active == sum(reserved) <= balance
    # No spurious refusal: available only went down, so whatever was refused is still
    # more than what is left.
    assert state["available"] < min(rejected)
    # Both worker processes answered some of the requests.
    for worker in workers.workers:
        assert "Task dust.reserve[" in worker.log_since(marks[worker.name]), worker.name
    assert dust.journal_disagreements() == []


def dust_cli(*args: str) -> Any:
    """``dust ARGS --json`` against the e2e database, as an operator runs it."""
    done = subprocess.run(
        [str(BIN / "dust"), *args, "--json"],
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


def test_history_pages_newest_first_in_the_cli_shape(dust, envelope, uid):
    customer = f"cus_{uid}"
    earn(dust, envelope, customer, 100)
    for n in range(3):  # three store-credit refunds in two currencies
        currency = "usd" if n < 2 else "eur"
        order = {"id": f"o_{uid}_{n}", "customer_id": customer, "currency_code": currency}
        refund = {
            "id": f"r_{uid}_{n}",
            "order_id": order["id"],
            "amount": 500 + n,
            "currency_code": currency,
            "to_store_credit": True,
        }
        rows = dust.apply(
            envelope("order.placed", {**order, "total": 1000}), envelope("refund.created", refund)
        )
        assert {r["status"] for r in rows.values()} == {"processed"}, rows
    everything = dust_cli("history", customer)

    pages, cursor = [], None
    while True:
        kwargs = {"customer_id": customer, "kind": "store_credit", "limit": 2}
        reply = dust.request("history", **kwargs, **({"before": cursor} if cursor else {}))
        assert set(reply) == {"entries", "next"}
        pages.append(reply["entries"])
        cursor = reply["next"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [2, 1]
    credits = [e for e in everything if e["kind"] == "store_credit"]
    assert [e for page in pages for e in page] == credits  # same objects, newest first
    assert [(e["currency_code"], e["amount"]) for e in credits] == [
        ("eur", 502),
        ("usd", 501),
        ("usd", 500),
    ]

    usd = dust.request("history", customer_id=customer, kind="store_credit", currency_code="USD")
    assert usd == {"entries": credits[1:], "next": None}
    dust_page = dust.request("history", customer_id=customer, kind="dust", limit=100)
    assert dust_page["next"] is None
    assert dust_page["entries"] == [e for e in everything if e["kind"] == "dust"]
    assert {e["kind"] for e in dust_page["entries"]} == {"dust"}
    assert (
        dust_page["entries"][-1]["reason"] == "earn" and dust_page["entries"][-1]["amount"] == 100
    )

    for bad in (
        {"kind": "points"},
        {"kind": "dust", "limit": 0},
        {"kind": "dust", "limit": 101},
        {"kind": "dust", "limit": "20"},
        {"kind": "dust", "before": "not-a-cursor"},
        {"kind": "dust", "before": 17},
        {},
    ):
        reply = dust.request("history", customer_id=customer, **bad)
        assert reply["status"] == "rejected" and reply["reason"] == "invalid_request", bad
        assert reply["detail"].startswith("invalid payload: "), reply
    assert dust.request("history", kind="dust")["status"] == "rejected"


def test_redeem_values_per_currency(dust, envelope, uid):
    customer = f"cus_{uid}"
    earn(dust, envelope, customer, 100)
    values = dust.request("balance", customer_id=customer)["redeem_values"]
    assert values == {"default": "1", "jpy": "0.5", "kwd": "12.5"}
    assert dust_cli("balance", customer) == dust.request("balance", customer_id=customer)
    for currency, value in (("JPY", "0.5"), ("kwd", "12.5"), ("usd", "1"), (None, "1")):
        kwargs = {"currency_code": currency} if currency else {}
        reply = dust.request(
            "reserve", cart_id=f"cart_{uid}", customer_id=customer, amount=10, kind="dust", **kwargs
        )
        assert reply["status"] == "reserved" and reply["redeem_value"] == value, reply
    credit = dust.request(
        "reserve",
        cart_id=f"cart_{uid}",
        customer_id=customer,
        amount=10,
        kind="store_credit",
        currency_code="usd",
    )
    assert "redeem_value" not in credit  # store credit is money already


def test_order_refunds_give_a_guest_refund_its_claim_code(dust, envelope, uid):
    order = f"o_{uid}"
    refund = {"order_id": order, "currency_code": "usd", "to_store_credit": True}
    early = envelope("refund.created", {**refund, "id": f"r_{uid}_1", "amount": 400})
    assert dust.apply(early)[early["id"]]["status"] == "processed"
    waiting = dust.request("order_refunds", order_id=order)
    assert waiting["order_id"] == order
    assert [(r["refund_id"], r["status"], r["code"]) for r in waiting["refunds"]] == [
        (f"r_{uid}_1", "waiting_for_order", None)
    ]

    placed = {"id": order, "customer_id": None, "currency_code": "usd", "total": 1000}
    dust.apply(envelope("order.placed", placed))
    over = envelope("refund.created", {**refund, "id": f"r_{uid}_2", "amount": 601})
    assert dust.apply(over)[over["id"]]["status"] == "needs_attention"

    reply = dust.request("order_refunds", order_id=order)
    first, second = reply["refunds"]
    assert first["status"] == "applied" and first["store_credit"] == 400
    assert first["code"].startswith("SC-")
    assert (second["status"], second["code"], second["store_credit"]) == (
        "needs_attention",
        None,
        0,
    )
    assert "1001" in second["reason"]
    # the code is the anonymous account's: its balance is the refund
    assert (
        dust.scalar(
            "SELECT balance FROM dust_accounts WHERE code = :c AND customer_id IS NULL",
            c=first["code"],
        )
        == 400
    )
    assert dust.request("order_refunds", order_id=" ")["status"] == "rejected"


def test_overview_reports_reconciliation_attention_and_what_is_owed(dust, envelope, uid):
    """``dust.overview``: the last reconciliation as ``dust reconcile`` stored it, events
    that need attention with their reasons (gone once resolved), and what the store owes,
    which moves by exactly what was credited."""
    customer = f"cus_{uid}"
    before = dust.request("overview")
    assert set(before) == {"reconciliation", "events", "event_counts", "owed"}
    assert set(before["event_counts"]) == {"needs_attention", "failed"}

    earn(dust, envelope, customer, 250)
    adjust = {"customer_id": customer, "direction": "credit", "reason": "goodwill", "actor": "t"}
    assert (
        dust.request(
            "admin.adjust", **adjust, amount=1234, kind="store_credit", currency_code="jpy"
        )["status"]
        == "ok"
    )
    # A refund of an order Dust knows, above what it charged: held for a person.
    order = {"id": f"o_{uid}", "customer_id": customer, "currency_code": "usd", "total": 1000}
    dust.apply(envelope("order.placed", order))
    over = envelope(
        "refund.created",
        {
            "id": f"r_{uid}",
            "order_id": order["id"],
            "amount": 1001,
            "currency_code": "usd",
            "to_store_credit": True,
        },
    )
    assert dust.apply(over)[over["id"]]["status"] == "needs_attention"
    # (the order earned 10 more dust: 1000 cents at 0.01)
    # The event needing attention is a discrepancy: `dust reconcile` exits 1 and says so.
    done = subprocess.run(
        [str(BIN / "dust"), "reconcile", "--json"],
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    run = json.loads(done.stdout)

    after = dust.request("overview", limit=100)
    assert after["reconciliation"]["id"] == run["reconciliation_id"]
    assert after["reconciliation"]["ok"] is False
    assert after["reconciliation"]["discrepancy_count"] >= 1
    listed = {e["event_id"]: e for e in after["events"]}
    assert listed[over["id"]]["status"] == "needs_attention"
    assert "1001" in listed[over["id"]]["reason"]
    assert after["event_counts"]["needs_attention"] == before["event_counts"]["needs_attention"] + 1
    owed_before = {c["currency_code"]: c for c in before["owed"]["currencies"]}
    owed_after = {c["currency_code"]: c for c in after["owed"]["currencies"]}
    assert after["owed"]["dust"]["outstanding"] == before["owed"]["dust"]["outstanding"] + 260
    jpy_before = owed_before.get("jpy", {"store_credit": {"outstanding": 0}})
    assert (
        owed_after["jpy"]["store_credit"]["outstanding"]
        == jpy_before["store_credit"]["outstanding"] + 1234
    )
    for code, row in owed_after.items():
        value = after["owed"]["redeem_values"].get(code, after["owed"]["redeem_values"]["default"])
        assert row["redeem_value"] == value
        assert row["dust_value"] == int(after["owed"]["dust"]["outstanding"] * Decimal(value))

    resolved = dust.request(
        "admin.resolve", event_id=over["id"], reason="refunded by hand", actor="t"
    )
    assert resolved["status"] == "ok"
    final = dust.request("overview", limit=100)
    assert over["id"] not in {e["event_id"] for e in final["events"]}
    assert dust.request("overview", limit=0)["status"] == "rejected"
