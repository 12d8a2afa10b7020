"""Commerce events through real workers (docs/CONTRACT.md §3), published by a bare Celery client."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from .support import EVENTS_QUEUE, bare_client, wait_queue_empty

pytestmark = [pytest.mark.services, pytest.mark.e2e]


def order(uid: str, n: int = 1, **fields):
    """The order of docs/CONTRACT.md §3.3.3: total 10999, shipping 999, one item of 10000
    -> 100 dust."""
    data = {
        "id": f"order_{uid}_{n}",
        "customer_id": f"cus_{uid}",
        "cart_id": f"cart_{uid}_{n}",
        "currency_code": "usd",
        "total": 10999,
        "shipping_total": 999,
        "tax_total": 0,
        "dust_total": 0,
        "store_credit_total": 0,
        "items": [{"id": f"item_{uid}", "product_id": "prod_1", "quantity": 2, "total": 10000}],
    }
    data.update(fields)
    return data


def refund(uid: str, n: int = 1, amount: int = 5000):
    return {
        "id": f"ref_{uid}_{n}",
        "order_id": f"order_{uid}_{n}",
        "customer_id": f"cus_{uid}",
        "amount": amount,
        "currency_code": "usd",
        "to_store_credit": True,
    }


def test_order_lifecycle_with_checkout(dust, envelope, uid):
    customer = f"cus_{uid}"
    rows = dust.apply(envelope("customer.created", {"id": customer, "email": "a@example.com"}))
    assert [r["status"] for r in rows.values()] == ["processed"]
    assert dust.dust(customer) == {"balance": 0, "held": 0, "pending": 0, "available": 0}

    # docs/CONTRACT.md §3.3.3: total 10999, shipping 999 -> 100 dust.
    placed = dust.apply(envelope("order.placed", order(uid)))
    (row,) = placed.values()
    assert row["status"] == "processed", row
    assert row["detail"]["earned"] == 100
    assert dust.dust(customer)["balance"] == 100

    # Refund 5000 to store credit -> 5000 store credit, dust down to 50.
    refunded = dust.apply(envelope("refund.created", refund(uid)))
    (row,) = refunded.values()
    assert row["status"] == "processed", row
    assert dust.store_credit(customer) == {"usd": 5000}
    assert dust.dust(customer)["balance"] == 50

    # Checkout of a second order paid partly with dust: reserve, then the order captures.
    reply = dust.request(
        "reserve", cart_id=f"cart_{uid}_2", customer_id=customer, amount=30, kind="dust"
    )
    assert reply["status"] == "reserved" and reply["available"] == 20, reply
    second = order(uid, 2, total=2030, shipping_total=0, dust_total=30, items=None)
    (row,) = dust.apply(envelope("order.placed", second)).values()
    assert row["status"] == "processed", row
    assert row["detail"]["captured"] == {"dust": 30}
    # base 2030 -> 20 dust earned; 50 - 30 + 20 = 40.
    assert dust.dust(customer) == {"balance": 40, "held": 0, "pending": 0, "available": 40}

    # Canceling it gives back the 30 spent and claws back the 20 earned.
    (row,) = dust.apply(envelope("order.canceled", {"id": f"order_{uid}_2"})).values()
    assert row["status"] == "processed", row
    assert dust.dust(customer) == {"balance": 50, "held": 0, "pending": 0, "available": 50}

    balance = dust.request("balance", customer_id=customer)
    assert balance["dust"] == {"balance": 50, "held": 0, "pending": 0, "available": 50}
    (credit,) = balance["store_credit"]
    assert credit["currency_code"] == "usd" and credit["balance"] == 5000
    assert dust.journal_disagreements() == []


def test_duplicate_delivery_is_applied_once(dust, envelope, uid):
    customer = f"cus_{uid}"
    placed = envelope("order.placed", order(uid))
    # Two copies at once (the two workers may race for them), a third after the first.
    dust.publish(placed, placed)
    dust.wait_events([placed["id"]])
    dust.publish(placed)
    wait_queue_empty()

    (row,) = dust.events([placed["id"]]).values()
    assert row["status"] == "processed" and row["attempts"] == 1
    assert dust.dust(customer)["balance"] == 100
    entries = dust.rows(
        "SELECT reason, amount FROM dust_entries WHERE event_id = :e", e=placed["id"]
    )
    assert entries == [{"reason": "earn", "amount": 100}]


def test_conflicting_duplicate_is_recorded_and_changes_nothing(dust, envelope, uid):
    customer = f"cus_{uid}"
    placed = envelope("order.placed", order(uid))
    dust.apply(placed)
    assert dust.dust(customer)["balance"] == 100

    tampered = {**placed, "data": order(uid, total=1_000_999, shipping_total=999, items=None)}
    dust.publish(tampered)
    deadline = time.monotonic() + 20
    while not dust.scalar(
        "SELECT COUNT(*) FROM dust_event_conflicts WHERE event_id = :e", e=placed["id"]
    ):
        assert time.monotonic() < deadline, "conflict never recorded"
        time.sleep(0.05)
    wait_queue_empty()
    (row,) = dust.events([placed["id"]]).values()
    assert row["status"] == "processed"
    assert dust.dust(customer)["balance"] == 100
    assert dust.scalar("SELECT COUNT(*) FROM dust_entries WHERE event_id = :e", e=placed["id"]) == 1


def test_refund_before_its_order_converges(dust, envelope, uid):
    customer = f"cus_{uid}"
    (row,) = dust.apply(envelope("refund.created", refund(uid))).values()
    assert row["status"] == "processed", row
    assert row["detail"].get("waiting_for_order") is True
    # Nothing is credited before its order: only the order tells what it may refund.
    assert dust.store_credit(customer) == {}
    assert dust.dust(customer)["balance"] == 0

    (row,) = dust.apply(envelope("order.placed", order(uid))).values()
    assert row["status"] == "processed", row
    # Same ledger as placed-then-refunded: 5000 store credit, floor((10000-5000)*0.01) = 50.
    assert dust.store_credit(customer) == {"usd": 5000}
    assert dust.dust(customer)["balance"] == 50
    assert dust.journal_disagreements() == []


def test_cancel_before_its_order(dust, envelope, uid):
    customer = f"cus_{uid}"
    # The customer has 100 dust from an earlier order and holds 40 of it for cart 2.
    dust.apply(envelope("order.placed", order(uid)))
    reply = dust.request(
        "reserve", cart_id=f"cart_{uid}_2", customer_id=customer, amount=40, kind="dust"
    )
    assert reply["status"] == "reserved", reply
    assert dust.dust(customer) == {"balance": 100, "held": 40, "pending": 0, "available": 60}

    (row,) = dust.apply(envelope("order.canceled", {"id": f"order_{uid}_2"})).values()
    assert row["status"] == "processed", row
    assert row["detail"].get("waiting_for_order") is True

    (row,) = dust.apply(envelope("order.placed", order(uid, 2, dust_total=40))).values()
    assert row["status"] == "processed", row
    # Canceled first: nothing charged, nothing earned, the cart's hold released.
    assert dust.dust(customer) == {"balance": 100, "held": 0, "pending": 0, "available": 100}
    entries = dust.scalar(
        "SELECT COUNT(*) FROM dust_entries WHERE reference_id = :o", o=f"order_{uid}_2"
    )
    assert entries == 0
    assert dust.journal_disagreements() == []


def test_malformed_events_are_rejected_and_the_worker_goes_on(dust, envelope, uid):
    customer = f"cus_{uid}"
    wrong_type = envelope("order.placed", order(uid, total="10999"))
    negative = envelope("refund.created", refund(uid, amount=-5))
    no_data = {"id": f"evt_{uid}_nodata", "name": "order.placed", "data": "nope"}
    good = envelope("order.placed", order(uid, 2))
    not_json = "{not json " + uid
    dust.publish(wrong_type, negative, no_data, not_json, good)

    rows = dust.wait_events([wrong_type["id"], negative["id"], no_data["id"], good["id"]])
    for bad in (wrong_type, negative, no_data):
        row = rows[bad["id"]]
        assert row["status"] == "rejected", row
        assert row["reason"], row
    assert "total" in rows[wrong_type["id"]]["reason"]
    assert "amount" in rows[negative["id"]]["reason"]
    assert "data" in rows[no_data["id"]]["reason"]
    invalid_json = dust.rows(
        "SELECT status, reason FROM dust_events WHERE envelope = :t", t=not_json
    )
    assert invalid_json and invalid_json[0]["status"] == "rejected"
    assert "JSON" in invalid_json[0]["reason"]

    assert rows[good["id"]]["status"] == "processed"
    # Only the good order earned: nothing of the bad ones was half-applied.
    assert dust.dust(customer)["balance"] == 100
    assert dust.scalar(
        "SELECT COUNT(*) FROM dust_orders WHERE order_id = :o", o=f"order_{uid}_1"
    ) == (0)


class _MkdirWhenUnpickled:
    """Unpickling this object creates a directory: proof that a pickle was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_pickle_message_is_refused_and_nothing_executes(dust, workers, envelope, uid, tmp_path):
    customer = f"cus_{uid}"
    marker = tmp_path / "unpickled"
    payload = envelope("customer.created", {"id": customer, "x": _MkdirWhenUnpickled(str(marker))})
    pickler = bare_client(accept_content=["json", "pickle"])
    try:
        pickler.send_task(
            "dust.handle_event", args=[payload], queue=EVENTS_QUEUE, serializer="pickle"
        )
    finally:
        pickler.close()
    # A JSON event published afterwards goes through: the worker is alive and past it.
    sentinel = envelope("customer.created", {"id": f"{customer}_json"})
    dust.apply(sentinel)
    wait_queue_empty()
    deadline = time.monotonic() + 15
    refused = "Refusing to deserialize untrusted content of type pickle"
    while not any(refused in w.log() for w in workers.workers):
        assert time.monotonic() < deadline, "no worker logged the refused pickle message"
        time.sleep(0.1)

    assert not Path(marker).exists(), "the worker unpickled the message"
    assert dust.events([payload["id"]]) == {}
    assert dust.dust(customer) == {"balance": 0, "held": 0, "pending": 0, "available": 0}
    assert dust.scalar("SELECT COUNT(*) FROM dust_accounts WHERE customer_id = :c", c=customer) == 0
