"""The final ledger does not depend on the order in which the events of one order arrive
(docs/CONTRACT.md §3.2). Each permutation runs on its own customer, order and cart; every
customer must end up with the same balances, held amounts and open lots."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
GRANT_EXPIRES = T0 + timedelta(days=30)


def events_of(n: int, *, refunds: int, cancel: bool) -> dict[str, tuple[str, dict[str, Any]]]:
    customer, order, cart = f"cus_{n}", f"order_{n}", f"cart_{n}"
    events = {
        "customer.created": ("customer.created", {"id": customer}),
        "order.placed": (
            "order.placed",
            {
                "id": order,
                "customer_id": customer,
                "cart_id": cart,
                "currency_code": "usd",
                "total": 10999,
                "shipping_total": 999,
                "dust_total": 150,
                "store_credit_total": 1000,
            },
        ),
    }
    for r in range(refunds):
        events[f"refund.created#{r}"] = (
            "refund.created",
            # the refund does not name the customer: it waits for the order to know it
            {
                "id": f"ref_{n}_{r}",
                "order_id": order,
                "amount": 3000 + 1234 * r,
                "currency_code": "USD",
                "to_store_credit": r == 0,
            },
        )
    if cancel:
        events["order.canceled"] = ("order.canceled", {"id": order})
    return events


def run_permutations(dust: Any, configure: Any, *, refunds: int, cancel: bool) -> list[Any]:
    configure(DUST_DEFAULT_CURRENCY="eur")
    names = list(events_of(0, refunds=refunds, cancel=cancel))
    snapshots = []
    for n, arrival in enumerate(itertools.permutations(names)):
        customer = f"cus_{n}"
        # the customer already has dust and store credit, and holds some for the cart
        dust.grant(customer, 1000, expires_at=GRANT_EXPIRES)
        dust.grant(customer, 2500, kind="store_credit", currency="usd")
        assert dust.reserve(customer, f"cart_{n}", 200).status == "reserved"
        assert dust.reserve(customer, f"cart_{n}", 1500, "store_credit", "usd").status == "reserved"
        events = events_of(n, refunds=refunds, cancel=cancel)
        for key in arrival:
            name, data = events[key]
            result = dust.send(name, data)
            assert result.status == "processed", (arrival, key, result.reason)
        snapshots.append((arrival, dust.snapshot(customer)))
    return snapshots


def assert_all_equal(snapshots: list[Any]) -> Any:
    first_arrival, expected = snapshots[0]
    for arrival, snapshot in snapshots[1:]:
        assert snapshot == expected, f"{arrival} differs from {first_arrival}"
    return expected


def test_every_arrival_order_of_placed_refund_cancel_converges(dust: Any, configure: Any) -> None:
    snapshots = run_permutations(dust, configure, refunds=1, cancel=True)
    assert len(snapshots) == 24

    final = assert_all_equal(snapshots)

    # canceled: every charge given back, every earned dust clawed back, the refund kept
    assert final == {
        "dust": {"balance": 1000, "held": 0, "available": 1000},
        "store_credit": [("eur", 0, 0), ("usd", 2500 + 3000, 0)],
        "lots": [(GRANT_EXPIRES, 1000)],
    }


def test_every_arrival_order_of_placed_and_two_refunds_converges(dust: Any, configure: Any) -> None:
    snapshots = run_permutations(dust, configure, refunds=2, cancel=False)
    assert len(snapshots) == 24

    final = assert_all_equal(snapshots)

    # base 10000 - 1000 store credit = 9000; refunded 3000 + 4234 -> floor(1766 * 0.01)
    assert final == {
        "dust": {"balance": 1000 - 150 + 17, "held": 0, "available": 867},
        "store_credit": [("eur", 0, 0), ("usd", 2500 - 1000 + 3000, 0)],
        "lots": [(GRANT_EXPIRES, 850), (T0 + timedelta(days=365), 17)],
    }
