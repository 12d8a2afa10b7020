"""Checkout requests with a reply (docs/CONTRACT.md §5.1) through real workers and the
result backend."""

from __future__ import annotations

import itertools
import time

import pytest

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
    assert set(reserved) == {"status", "hold_id", "amount", "available"}
    assert reserved["status"] == "reserved"
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
    assert refused == {"status": "rejected", "reason": "insufficient_funds", "available": 50}

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
    assert set(balance) == {"customer_id", "dust", "store_credit"}
    assert balance["customer_id"] == customer
    assert balance["dust"] == {"balance": 100, "held": 50, "available": 50}
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
        "available": 100,
    }

    assert dust.request("balance", customer_id=f"nobody_{uid}") == {
        "customer_id": f"nobody_{uid}",
        "dust": {"balance": 0, "held": 0, "available": 0},
        "store_credit": [],
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
