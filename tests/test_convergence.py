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
                "dust_amount": 40 + 10 * r,  # returned items paid with dust
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
        "dust": {"balance": 1000, "held": 0, "pending": 0, "available": 1000},
        "store_credit": [("eur", 0, 0), ("usd", 2500 + 3000, 0)],
        "lots": [(GRANT_EXPIRES, 1000)],
    }


def test_every_arrival_order_of_placed_and_two_refunds_converges(dust: Any, configure: Any) -> None:
    snapshots = run_permutations(dust, configure, refunds=2, cancel=False)
    assert len(snapshots) == 24

    final = assert_all_equal(snapshots)

    # base 10000 - 1000 store credit - 150 dust = 8850; refunded 3000 + 4234 -> 1616 -> 16;
    # 40 + 50 dust given back to the lot it was spent from
    assert final == {
        "dust": {"balance": 1000 - 150 + 90 + 16, "held": 0, "pending": 0, "available": 956},
        "store_credit": [("eur", 0, 0), ("usd", 2500 - 1000 + 3000, 0)],
        "lots": [(GRANT_EXPIRES, 940), (T0 + timedelta(days=365), 16)],
    }


def test_every_arrival_order_converges_with_earn_rules_and_a_late_group_change(
    dust: Any, configure: Any
) -> None:
    """Rules in force (vip ×2, a campaign ×1.5 at T0) and pending dust: the customer joins
    vip an hour before the order, in a ``customer.updated`` that may arrive before or after
    the order, its refund and the customer's creation; every arrival order converges."""
    from decimal import Decimal

    from dust.ledger import rules
    from dust.worker import db as worker_db

    configure(DUST_PENDING_DAYS="3650")
    with worker_db.session_scope() as session:
        for kind, fields in [
            (rules.GROUP_MULTIPLIER, {"group_id": "vip", "multiplier": Decimal(2)}),
            (rules.CAMPAIGN, {"multiplier": Decimal("1.5"), "ends_at": T0 + timedelta(hours=1)}),
        ]:
            rules.add_rule(
                session,
                kind=kind,
                actor="test",
                reason="test",
                starts_at=T0 - timedelta(days=1),
                **fields,
            )
    at = {
        "customer.created": T0 - timedelta(hours=3),
        "customer.updated": T0 - timedelta(hours=1),
        "order.placed": T0,
        "refund.created#0": T0 + timedelta(hours=2),
    }
    names = list(at)
    snapshots = []
    for n, arrival in enumerate(itertools.permutations(names)):
        customer = f"cus_{n}"
        dust.grant(customer, 1000, expires_at=GRANT_EXPIRES)
        dust.grant(customer, 2500, kind="store_credit", currency="usd")
        events = events_of(n, refunds=1, cancel=False)
        events["customer.created"] = ("customer.created", {"id": customer, "group_ids": []})
        events["customer.updated"] = ("customer.updated", {"id": customer, "group_ids": ["vip"]})
        for key in arrival:
            name, data = events[key]
            result = dust.send(name, data, occurred_at=at[key])
            assert result.status == "processed", (arrival, key, result.reason)
        snapshots.append((arrival, dust.snapshot(customer)))
    assert len(snapshots) == 24

    final = assert_all_equal_by_expiry(snapshots)

    # base 10000 − 1000 store credit − 150 dust = 8850; refunded 3000 → 5850;
    # floor(5850 × 0.01 × 2 × 1.5) = floor(175.5) = 175, all of it pending; the refund's
    # 40 dust is given back to the lot it was spent from (never pending)
    assert final == {
        "dust": {"balance": 1000 - 150 + 40 + 175, "held": 0, "pending": 175, "available": 890},
        "store_credit": [("usd", 2500 - 1000 + 3000, 0)],
        "lots": [(GRANT_EXPIRES, 890), (T0 + timedelta(days=365), 175)],
    }


def assert_all_equal_by_expiry(snapshots: list[Any]) -> Any:
    """:func:`assert_all_equal`, lots summed by expiry: an earning raised by a late group
    record is a second lot of the same expiry as the first."""
    merged = []
    for arrival, snapshot in snapshots:
        lots: dict[Any, int] = {}
        for expires, remaining in snapshot["lots"]:
            lots[expires] = lots.get(expires, 0) + remaining
        merged.append((arrival, {**snapshot, "lots": sorted(lots.items())}))
    return assert_all_equal(merged)
