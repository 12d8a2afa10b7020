"""Properties of the ledger under random operations, and exactly-once under concurrency."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from dust.ledger import holds, journal
from dust.ledger.accounts import ensure_account, lock_accounts
from dust.ledger.errors import InsufficientFunds
from dust.ledger.journal import Ref
from dust.models import Lot, LotMovement
from dust.models.tables import DUST
from dust.worker.db import session_scope

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)

amounts = st.integers(min_value=1, max_value=500)
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("credit"),
            amounts,
            st.none() | st.integers(0, 400),
            st.sampled_from([None, "order_a", "order_b"]),
        ),
        st.tuples(st.just("spend"), amounts),
        st.tuples(st.just("clawback"), amounts),
        st.tuples(st.just("reserve"), st.integers(0, 2), amounts),
        st.tuples(st.just("release"), st.integers(0, 2)),
    ),
    max_size=25,
)
customers = count()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
def test_random_operations_keep_every_invariant(db: str, invariants: Any, ops: list) -> None:
    customer = f"cus_{next(customers)}"
    balance, reserved = 0, {}
    with session_scope() as session:
        account_id = ensure_account(session, customer, DUST)
    for n, op in enumerate(ops):
        with session_scope() as session:
            account = lock_accounts(session, [account_id])[account_id]
            ref = Ref(op[0], "test", customer, f"{customer}:{n}")
            available = balance - sum(reserved.values())
            if op[0] == "credit":
                expires = None if op[2] is None else T0 + timedelta(days=op[2])
                journal.credit(session, account, op[1], ref, expires_at=expires, order_id=op[3])
                balance += op[1]
            elif op[0] == "spend":
                if op[1] <= available:
                    before = open_lots(session, account_id)
                    entry = journal.debit(session, account, op[1], ref)
                    assert_drawn_soonest_expiring_first(session, entry.id, before)
                    balance -= op[1]
                else:
                    with pytest.raises(InsufficientFunds):
                        journal.debit(session, account, op[1], ref)
            elif op[0] == "clawback":
                journal.debit(session, account, op[1], ref, allow_debt=True)
                balance -= op[1]
            elif op[0] == "reserve":
                cart = f"{customer}_cart_{op[1]}"
                result = holds.reserve(session, account, cart, op[2], 3600)
                fits = op[2] == reserved.get(cart) or op[2] <= available + reserved.get(cart, 0)
                assert result.status == ("reserved" if fits else "rejected")
                if fits:
                    reserved[cart] = op[2]
            else:
                holds.release_cart(session, f"{customer}_cart_{op[1]}")
                reserved.pop(f"{customer}_cart_{op[1]}", None)
            assert (account.balance, account.held) == (balance, sum(reserved.values()))
    with session_scope() as session:
        invariants(session)


def open_lots(session: Any, account_id: int) -> list[tuple[Any, int, int]]:
    """Open lots as ``(sort key, lot id, remaining)`` in the order spending must use."""
    far = datetime.max.replace(tzinfo=UTC)
    rows = session.execute(
        select(Lot.id, Lot.expires_at, Lot.remaining).where(
            Lot.account_id == account_id, Lot.remaining > 0
        )
    ).all()
    return sorted(((expires or far, id_), id_, left) for id_, expires, left in rows)


def assert_drawn_soonest_expiring_first(session: Any, entry_id: int, before: list) -> None:
    drawn = dict(
        session.execute(
            select(LotMovement.lot_id, LotMovement.amount).where(LotMovement.entry_id == entry_id)
        ).all()
    )
    # the lots drawn are a prefix of the open lots in expiry order (never-expiring last),
    # each emptied except the last one drawn
    prefix = before[: len(drawn)]
    assert {lot_id for _, lot_id, _ in prefix} == set(drawn)
    for _, lot_id, left in prefix[:-1]:
        assert drawn[lot_id] == left


def run_together(count_: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``count_`` threads released at the same instant."""
    barrier = threading.Barrier(count_)
    results: list[Any] = [None] * count_
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count_)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


ORDER = {
    "id": "evt_01",
    "name": "order.placed",
    "occurred_at": "2026-11-20T10:00:00Z",
    "data": {"id": "order_1", "customer_id": "cus_1", "currency_code": "usd", "total": 10000},
}


def test_concurrent_deliveries_of_one_event_apply_it_once(dust: Any) -> None:
    from dust.tasks.inbox import process

    results = run_together(6, lambda _: process(ORDER))

    statuses = sorted(r.status for r in results)
    assert statuses == ["duplicate"] * 5 + ["processed"]
    assert dust.dust("cus_1") == 100
    assert len(dust.entries(reason="earn")) == 1


def test_concurrent_events_of_one_order_converge(dust: Any) -> None:
    from dust.tasks.inbox import process

    dust.grant("cus_1", 1000)
    events = [
        ORDER | {"data": ORDER["data"] | {"dust_total": 300}},
        {
            "id": "evt_r1",
            "name": "refund.created",
            "data": {
                "id": "r1",
                "order_id": "order_1",
                "amount": 4000,
                "currency_code": "usd",
                "to_store_credit": True,
            },
        },
        {"id": "evt_c1", "name": "customer.created", "data": {"id": "cus_1"}},
    ]
    results = run_together(len(events), lambda i: process(events[i]))

    assert [r.status for r in results] == ["processed"] * 3, [r.reason for r in results]
    # earned floor((10000 - 300 paid with dust - 4000 refunded) * 0.01)
    assert dust.balance("cus_1")["dust"]["balance"] == 1000 - 300 + 57
    assert dust.store_credit("cus_1") == 4000


def test_concurrent_reservations_never_overdraw(dust: Any) -> None:
    dust.grant("cus_1", 100)
    results = run_together(6, lambda i: dust.reserve("cus_1", f"cart_{i}", 30))
    assert sorted(r.status for r in results) == ["rejected"] * 3 + ["reserved"] * 3
    assert dust.balance("cus_1")["dust"] == {
        "balance": 100,
        "held": 90,
        "pending": 0,
        "available": 10,
    }


def test_concurrent_spends_from_one_account_never_overdraw(dust: Any) -> None:
    dust.grant("cus_1", 100)

    def spend(i: int) -> str:
        from dust.tasks.inbox import process

        data = {"id": f"order_{i}", "customer_id": "cus_1", "currency_code": "usd"}
        return process(
            {
                "id": f"evt_{i}",
                "name": "order.placed",
                "data": data | {"total": 0, "dust_total": 40},
            }
        ).status

    statuses = run_together(4, spend)
    assert sorted(statuses) == ["needs_attention"] * 2 + ["processed"] * 2
    assert dust.balance("cus_1")["dust"]["balance"] == 0  # 40 + 40 + the 20 that was left
