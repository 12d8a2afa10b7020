"""Lot and hold expiry, set-based, on SQLite and PostgreSQL.

Soonest-expiring lots go first, a lot can expire in part, held dust waits until the hold is
settled, a second run for the same instant changes nothing, and I1–I4 hold throughout
(the ``dust`` fixture checks them after every test).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from conftest import Dust
from sqlalchemy import select

from dust.ledger import expiry, holds, journal
from dust.ledger.accounts import lock_accounts
from dust.models import Account, Entry, Hold, Lot, LotMovement
from dust.models.base import utcnow
from dust.tasks import runs
from dust.worker.db import session_scope

NOW = utcnow().replace(microsecond=0)


def expire(as_of: datetime, **options: Any) -> expiry.Chunk:
    with session_scope() as session:
        return expiry.expire_lots(session, as_of, **options)


def expire_holds(as_of: datetime, **options: Any) -> holds.HoldExpiry:
    with session_scope() as session:
        return holds.expire_holds_chunk(session, as_of, **options)


def account_id(customer_id: str) -> int:
    with session_scope() as session:
        found = session.scalar(
            select(Account.id).where(Account.customer_id == customer_id, Account.kind == "dust")
        )
        assert found is not None
        return found


def lots_of(customer_id: str) -> list[tuple[int, int]]:
    """(amount, remaining) of every lot of the customer, in id order."""
    with session_scope() as session:
        rows = session.execute(
            select(Lot.amount, Lot.remaining)
            .join(Account, Account.id == Lot.account_id)
            .where(Account.customer_id == customer_id)
            .order_by(Lot.id)
        )
        return [(a, r) for a, r in rows]


def movements(entry_id: int) -> list[tuple[int, int]]:
    with session_scope() as session:
        rows = session.execute(
            select(LotMovement.lot_id, LotMovement.amount)
            .where(LotMovement.entry_id == entry_id)
            .order_by(LotMovement.lot_id)
        )
        return [(lot, amount) for lot, amount in rows]


def test_due_lots_expire_soonest_first_and_in_part(dust: Dust) -> None:
    # granted out of order: expiry must follow expires_at, not ids
    dust.grant("cus_1", 50, expires_at=NOW + timedelta(days=2))
    dust.grant("cus_1", 100, expires_at=NOW + timedelta(days=1))
    dust.grant("cus_1", 30, expires_at=NOW + timedelta(days=10))
    dust.grant("cus_1", 20)  # never expires
    assert dust.dust("cus_1") == 200

    assert expire(NOW).entries == 0  # nothing due yet
    done = expire(NOW + timedelta(days=1, hours=12))
    assert (done.accounts, done.entries, done.lots, done.amount) == (1, 1, 1, 100)
    assert dust.dust("cus_1") == 100
    assert lots_of("cus_1") == [(50, 50), (100, 0), (30, 30), (20, 20)]

    # a spend of 40 draws the soonest lot (50 → 10); expiry then takes only what is left
    owner = account_id("cus_1")
    with session_scope() as session:
        account = lock_accounts(session, [owner])[owner]
        journal.debit(session, account, 40, journal.Ref("spend", "order", "o1"))
    assert lots_of("cus_1") == [(50, 10), (100, 0), (30, 30), (20, 20)]
    done = expire(NOW + timedelta(days=30))
    assert (done.lots, done.amount) == (2, 40)
    assert lots_of("cus_1") == [(50, 0), (100, 0), (30, 0), (20, 20)]
    assert dust.dust("cus_1") == 20

    entries = dust.entries(reason="expiry")
    assert [(e.direction, e.amount, e.balance_after) for e in entries] == [
        ("debit", 100, 100),
        ("debit", 40, 20),
    ]
    assert entries[0].reference_type == "job"
    assert entries[0].idempotency_key == expiry.idempotency_key(
        entries[0].account_id, NOW + timedelta(days=1, hours=12)
    )
    # each expiry records which lots it drew: the soonest-expiring first
    first, second = (movements(e.id) for e in entries)
    assert [amount for _, amount in first] == [100]
    assert sorted(amount for _, amount in second) == [10, 30]


def test_held_dust_does_not_expire_until_the_hold_is_settled(dust: Dust) -> None:
    dust.grant("cus_1", 100, expires_at=NOW + timedelta(minutes=1))
    dust.grant("cus_1", 50, expires_at=NOW + timedelta(days=300))
    assert dust.reserve("cus_1", "cart_1", 120).status == "reserved"  # available 30

    # as_of is before the hold's own expiry (one hour): 120 stays held
    as_of = NOW + timedelta(minutes=10)
    done = expire(as_of)
    assert (done.entries, done.amount) == (1, 30)
    assert lots_of("cus_1") == [(100, 70), (50, 50)]
    balance = dust.balance("cus_1")["dust"]
    assert balance == {"balance": 120, "held": 120, "pending": 0, "available": 0}

    # same instant again: nothing changes
    before = dust.counts()
    assert expire(as_of).entries == 0
    assert dust.counts() == before

    # once the hold is released, a later run takes the rest of the due lot
    with session_scope() as session:
        holds.release_cart(session, "cart_1")
    done = expire(as_of + timedelta(minutes=1))
    assert (done.entries, done.amount) == (1, 70)
    assert lots_of("cus_1") == [(100, 0), (50, 50)]
    assert dust.dust("cus_1") == 50


def test_expiring_the_same_instant_twice_changes_nothing(dust: Dust) -> None:
    for n in range(1, 6):
        dust.grant(f"cus_{n}", 10 * n, expires_at=NOW - timedelta(days=n))
        dust.grant(f"cus_{n}", 7, expires_at=NOW + timedelta(days=n))
    first = expire(NOW)
    assert (first.accounts, first.entries, first.amount) == (5, 5, 150)
    before = dust.counts()
    again = expire(NOW)
    assert (again.entries, again.amount) == (0, 0)
    assert dust.counts() == before
    assert [dust.dust(f"cus_{n}") for n in range(1, 6)] == [7] * 5


def test_a_debt_account_and_store_credit_are_left_alone(dust: Dust, configure: Any) -> None:
    dust.grant("cus_1", 40, expires_at=NOW - timedelta(days=1))
    owner = account_id("cus_1")
    with session_scope() as session:
        account = lock_accounts(session, [owner])[owner]
        # a clawback under the debt policy: balance −60, lots empty
        journal.debit(
            session, account, 100, journal.Ref("clawback", "order", "o1"), allow_debt=True
        )
    dust.grant("cus_2", 500, kind="store_credit", currency="usd")
    done = expire(NOW)
    assert done.entries == 0
    assert dust.dust("cus_1") == -60
    assert dust.store_credit("cus_2") == 500


def test_chunks_by_account_give_the_same_result(dust: Dust) -> None:
    for n in range(1, 8):
        dust.grant(f"cus_{n}", 5 * n, expires_at=NOW - timedelta(hours=n))
        dust.grant(f"cus_{n}", 3, expires_at=NOW - timedelta(hours=2 * n))
    cursor, total, chunks = 0, 0, 0
    while True:
        done = expire(NOW, after_id=cursor, limit=3)
        chunks += 1
        total += done.amount
        if done.last_account_id is None or done.accounts < 3:
            break
        cursor = done.last_account_id
    assert chunks == 3
    assert total == sum(5 * n + 3 for n in range(1, 8))
    assert all(dust.dust(f"cus_{n}") == 0 for n in range(1, 8))


def test_expire_holds_is_set_based_over_many_accounts(dust: Dust) -> None:
    for n in range(1, 6):
        dust.grant(f"cus_{n}", 100)
        dust.reserve(f"cus_{n}", f"cart_{n}a", 10)
        dust.reserve(f"cus_{n}", f"cart_{n}b", 20)
    later = utcnow() + timedelta(hours=2)
    first = expire_holds(later, limit=2)
    assert (first.accounts, first.holds, first.amount) == (2, 4, 60)
    rest = expire_holds(later, after_id=first.last_account_id or 0)
    assert (rest.accounts, rest.holds, rest.amount) == (3, 6, 90)
    assert expire_holds(later).holds == 0
    for n in range(1, 6):
        assert dust.balance(f"cus_{n}")["dust"] == {
            "balance": 100,
            "held": 0,
            "pending": 0,
            "available": 100,
        }
    with session_scope() as session:
        statuses = set(session.scalars(select(Hold.status)))
        settled = set(session.scalars(select(Hold.settled_at)))
    assert statuses == {"expired"}
    assert settled == {later}


def test_holds_not_yet_due_stay_active(dust: Dust) -> None:
    dust.grant("cus_1", 100)
    dust.reserve("cus_1", "cart_1", 30)
    assert expire_holds(utcnow()).holds == 0
    assert dust.balance("cus_1")["dust"]["held"] == 30


def test_the_expire_command_code_records_its_runs(dust: Dust) -> None:
    dust.grant("cus_1", 100, expires_at=NOW - timedelta(days=1))
    dust.grant("cus_1", 10)
    dust.reserve("cus_1", "cart_1", 10)
    as_of = utcnow() + timedelta(hours=2)  # the hold is due as well
    hold_run = runs.run_now("expire_holds", as_of)
    lot_run = runs.run_now("expire_lots", as_of)
    assert hold_run["status"] == lot_run["status"] == "succeeded"
    assert hold_run["counts"]["holds"] == 1 and hold_run["counts"]["amount"] == 10
    assert lot_run["counts"]["amount"] == 100 and lot_run["counts"]["entries"] == 1
    assert dust.balance("cus_1")["dust"] == {
        "balance": 10,
        "held": 0,
        "pending": 0,
        "available": 10,
    }
    (entry,) = dust.entries(reason="expiry")
    assert entry.reference_id == f"job_run:{lot_run['id']}"


@pytest.mark.parametrize("spent", [0, 35])
def test_lots_invariant_after_expiry(dust: Dust, invariants: Any, spent: int) -> None:
    dust.grant("cus_1", 40, expires_at=NOW - timedelta(days=3))
    dust.grant("cus_1", 25, expires_at=NOW - timedelta(days=1))
    dust.grant("cus_1", 60, expires_at=NOW + timedelta(days=1))
    if spent:
        owner = account_id("cus_1")
        with session_scope() as session:
            account = lock_accounts(session, [owner])[owner]
            journal.debit(session, account, spent, journal.Ref("spend", "order", "o1"))
    expire(NOW)
    assert dust.dust("cus_1") == 60
    with session_scope() as session:
        invariants(session)
        total = session.scalar(select(Entry.amount).where(Entry.reason == "expiry"))
    assert total == 65 - spent
