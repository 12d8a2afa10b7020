"""Holds: reserve, re-reserve, release, expire, and held == Σ active holds."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from dust.ledger import holds, journal
from dust.ledger.accounts import ensure_account, lock_accounts
from dust.ledger.journal import Ref
from dust.models import Account, Hold
from dust.models.base import utcnow
from dust.models.tables import DUST, STORE_CREDIT

TTL = 3600


def funded(session: Session, customer_id: str, amount: int, kind: str = DUST) -> Account:
    currency = "usd" if kind == STORE_CREDIT else None
    account_id = ensure_account(session, customer_id, kind, currency)
    account = lock_accounts(session, [account_id])[account_id]
    journal.credit(session, account, amount, Ref("adjustment", "test", customer_id))
    return account


def active(session: Session, account: Account) -> list[Hold]:
    return list(
        session.scalars(select(Hold).where(Hold.account_id == account.id, Hold.status == "active"))
    )


@pytest.mark.parametrize("kind", [DUST, STORE_CREDIT])
def test_reserve_reduces_available(session: Session, invariants: Any, kind: str) -> None:
    account = funded(session, "cus_1", 100, kind)
    reservation = holds.reserve(session, account, "cart_1", 60, TTL)
    session.commit()

    assert reservation.as_reply() == {
        "status": "reserved",
        "hold_id": reservation.hold_id,
        "amount": 60,
        "available": 40,
    }
    assert (account.balance, account.held, holds.available(account)) == (100, 60, 40)
    hold = session.get(Hold, reservation.hold_id)
    assert hold is not None and hold.status == "active" and hold.cart_id == "cart_1"
    assert hold.expires_at - hold.created_at == timedelta(seconds=TTL)
    invariants(session)


def test_same_amount_again_is_a_no_op(session: Session, invariants: Any) -> None:
    account = funded(session, "cus_1", 100)
    first = holds.reserve(session, account, "cart_1", 60, TTL)
    again = holds.reserve(session, account, "cart_1", 60, TTL)
    assert again.status == "reserved" and again.hold_id == first.hold_id
    assert account.held == 60
    assert len(active(session, account)) == 1
    assert session.scalar(select(Hold.id).where(Hold.status != "active")) is None
    invariants(session)


def test_different_amount_replaces_the_hold(session: Session, invariants: Any) -> None:
    account = funded(session, "cus_1", 100)
    first = holds.reserve(session, account, "cart_1", 60, TTL)
    # 90 fits because the 60 of the hold being replaced counts as available
    second = holds.reserve(session, account, "cart_1", 90, TTL)
    assert second.status == "reserved" and second.hold_id != first.hold_id
    assert (account.held, second.available) == (90, 10)
    old = session.get(Hold, first.hold_id)
    assert old is not None and old.status == "released" and old.settled_at is not None
    assert [h.id for h in active(session, account)] == [second.hold_id]
    smaller = holds.reserve(session, account, "cart_1", 10, TTL)
    assert account.held == 10 and smaller.available == 90
    invariants(session)


def test_insufficient_keeps_the_old_hold(session: Session, invariants: Any) -> None:
    account = funded(session, "cus_1", 100)
    first = holds.reserve(session, account, "cart_1", 60, TTL)
    other = holds.reserve(session, account, "cart_2", 30, TTL)
    assert other.status == "reserved"
    refused = holds.reserve(session, account, "cart_1", 71, TTL)

    assert refused.as_reply() == {
        "status": "rejected",
        "reason": "insufficient_funds",
        "available": 10,
    }
    assert account.held == 90
    hold = session.get(Hold, first.hold_id)
    assert hold is not None and hold.status == "active" and hold.amount == 60
    # a brand-new cart beyond what is available is refused the same way
    assert holds.reserve(session, account, "cart_3", 11, TTL).status == "rejected"
    assert len(active(session, account)) == 2
    invariants(session)


def test_release_cart_releases_every_hold_of_the_cart(session: Session, invariants: Any) -> None:
    dust = funded(session, "cus_1", 100)
    credit = funded(session, "cus_1", 5000, STORE_CREDIT)
    other = funded(session, "cus_2", 100)
    holds.reserve(session, dust, "cart_1", 40, TTL)
    holds.reserve(session, credit, "cart_1", 1500, TTL)
    kept = holds.reserve(session, other, "cart_2", 70, TTL)
    session.commit()

    assert holds.release_cart(session, "cart_1") == 1540
    session.commit()
    assert (dust.held, credit.held, other.held) == (0, 0, 70)
    assert holds.release_cart(session, "cart_1") == 0
    assert holds.release_cart(session, "no_such_cart") == 0
    hold = session.get(Hold, kept.hold_id)
    assert hold is not None and hold.status == "active"
    invariants(session)


def test_expire_holds_is_idempotent_for_the_same_instant(session: Session, invariants: Any) -> None:
    account = funded(session, "cus_1", 100)
    account_id = account.id
    short = holds.reserve(session, account, "cart_1", 10, ttl_seconds=60)
    long = holds.reserve(session, account, "cart_2", 20, ttl_seconds=7200)
    session.commit()
    as_of = utcnow() + timedelta(seconds=120)

    assert holds.expire_holds(session, as_of) == 1
    session.commit()
    assert holds.expire_holds(session, as_of) == 0
    session.commit()

    def stored(model: Any, id_: int | None) -> Any:
        return session.get(model, id_, populate_existing=True)

    assert (stored(Account, account_id).held, stored(Account, account_id).balance) == (20, 100)
    expired = stored(Hold, short.hold_id)
    assert expired.status == "expired" and expired.settled_at == as_of
    assert stored(Hold, long.hold_id).status == "active"
    assert holds.expire_holds(session, as_of + timedelta(hours=3)) == 1
    session.commit()
    assert stored(Account, account_id).held == 0
    invariants(session)


def test_settled_holds_cannot_be_settled_again(session: Session) -> None:
    account = funded(session, "cus_1", 100)
    reservation = holds.reserve(session, account, "cart_1", 10, TTL)
    holds.release_cart(session, "cart_1")
    hold = session.get(Hold, reservation.hold_id)
    assert hold is not None
    with pytest.raises(AssertionError):
        holds.release_holds(session, {account.id: account}, [hold])
    assert account.held == 0


def test_capture_debits_part_and_releases_the_rest(session: Session, invariants: Any) -> None:
    account = funded(session, "cus_1", 100)
    reservation = holds.reserve(session, account, "cart_1", 60, TTL)
    hold = session.get(Hold, reservation.hold_id)
    assert hold is not None
    took = holds.capture(session, account, hold, 25, Ref("spend", "order", "o1"), "o1")
    assert took == 25
    assert (account.balance, account.held) == (75, 0)
    assert (hold.status, hold.captured, hold.order_id) == ("captured", 25, "o1")
    invariants(session)


def test_held_is_the_sum_of_active_holds(session: Session, invariants: Any) -> None:
    account = funded(session, "cus_1", 1000)
    for n, amount in enumerate([100, 250, 50, 300]):
        holds.reserve(session, account, f"cart_{n}", amount, TTL)
    holds.reserve(session, account, "cart_1", 200, TTL)  # replaces 250
    holds.release_cart(session, "cart_2")
    session.commit()

    assert account.held == sum(h.amount for h in active(session, account)) == 600
    invariants(session)
