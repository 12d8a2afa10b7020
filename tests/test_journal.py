"""The journal: entries, cached balances, lots, debt, and what the database itself refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from dust.ledger import journal
from dust.ledger.accounts import ensure_account, lock_accounts
from dust.ledger.errors import InsufficientFunds
from dust.ledger.journal import Ref
from dust.models import Account, Entry, Lot, LotMovement
from dust.models.base import utcnow
from dust.models.tables import DUST, STORE_CREDIT

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def account(session: Session, customer_id: str, kind: str = DUST, currency: str | None = None):
    account_id = ensure_account(session, customer_id, kind, currency)
    return lock_accounts(session, [account_id])[account_id]


def ref(n: int | str, reason: str = "adjustment") -> Ref:
    return Ref(reason, "test", str(n), idempotency_key=f"test:{reason}:{n}")


def test_credit_and_debit_move_balance_and_balance_after(session: Session, invariants: Any) -> None:
    dust = account(session, "cus_1")
    first = journal.credit(session, dust, 100, ref(1))
    second = journal.debit(session, dust, 30, ref(2, "spend"))
    third = journal.credit(session, dust, 5, ref(3))
    session.commit()

    assert (first.balance_after, second.balance_after, third.balance_after) == (100, 70, 75)
    assert [e.direction for e in (first, second, third)] == ["credit", "debit", "credit"]
    stored = session.get(Account, dust.id, populate_existing=True)
    assert stored is not None and stored.balance == 75
    invariants(session)


def test_store_credit_moves_without_lots(session: Session, invariants: Any) -> None:
    credit = account(session, "cus_1", STORE_CREDIT, "USD")
    journal.credit(session, credit, 5000, ref(1))
    journal.debit(session, credit, 1200, ref(2, "spend"))
    session.commit()

    assert credit.currency_code == "usd"
    assert credit.balance == 3800
    assert session.scalar(select(Lot.id)) is None
    invariants(session)


@pytest.mark.parametrize("kind", [DUST, STORE_CREDIT])
def test_debit_beyond_available_raises_and_changes_nothing(session: Session, kind: str) -> None:
    target = account(session, "cus_1", kind, "usd" if kind == STORE_CREDIT else None)
    journal.credit(session, target, 100, ref(1))
    target.held = 30  # a hold of 30 (held is what reserve maintains)
    session.commit()
    entries_before = session.scalar(text("SELECT count(*) FROM dust_entries"))

    with pytest.raises(InsufficientFunds) as raised:
        journal.debit(session, target, 71, ref(2, "spend"))

    assert (raised.value.available, raised.value.requested) == (70, 71)
    assert target.balance == 100
    assert session.scalar(text("SELECT count(*) FROM dust_entries")) == entries_before
    assert session.scalar(text("SELECT count(*) FROM dust_lot_movements")) == 0
    # exactly the available amount is fine
    journal.debit(session, target, 70, ref(3, "spend"))
    assert target.balance == 30


def test_store_credit_never_goes_into_debt(session: Session) -> None:
    credit = account(session, "cus_1", STORE_CREDIT, "usd")
    journal.credit(session, credit, 10, ref(1))
    with pytest.raises(InsufficientFunds):
        journal.debit(session, credit, 11, ref(2, "clawback"), allow_debt=True)
    assert credit.balance == 10


@pytest.mark.parametrize("amount", [0, -5, True, 1.5])
def test_journal_refuses_non_positive_or_non_integer_amounts(session: Session, amount) -> None:
    dust = account(session, "cus_1")
    with pytest.raises(ValueError):
        journal.credit(session, dust, amount, ref(1))
    assert dust.balance == 0


def test_lots_are_drawn_soonest_expiring_first_never_expiring_last(
    session: Session, invariants: Any
) -> None:
    dust = account(session, "cus_1")
    # Created in an order that differs from their expiry order, with and without an order.
    never = journal.credit(session, dust, 10, ref("never"), expires_at=None)
    late = journal.credit(session, dust, 10, ref("late"), expires_at=T0 + timedelta(days=30))
    soon = journal.credit(
        session, dust, 10, ref("soon"), expires_at=T0 + timedelta(days=10), order_id="order_1"
    )
    mid = journal.credit(
        session, dust, 10, ref("mid"), expires_at=T0 + timedelta(days=20), order_id="order_2"
    )
    lot_of = {
        entry.id: session.scalar(select(Lot).where(Lot.entry_id == entry.id))
        for entry in (never, late, soon, mid)
    }

    spend = journal.debit(session, dust, 25, ref("spend", "spend"))
    session.commit()

    remaining = {
        "soon": lot_of[soon.id].remaining,
        "mid": lot_of[mid.id].remaining,
        "late": lot_of[late.id].remaining,
        "never": lot_of[never.id].remaining,
    }
    assert remaining == {"soon": 0, "mid": 0, "late": 5, "never": 10}
    movements = session.execute(
        select(LotMovement.lot_id, LotMovement.amount)
        .where(LotMovement.entry_id == spend.id)
        .order_by(LotMovement.id)
    ).all()
    assert movements == [
        (lot_of[soon.id].id, 10),
        (lot_of[mid.id].id, 10),
        (lot_of[late.id].id, 5),
    ]
    # the never-expiring lot goes last
    journal.debit(session, dust, 15, ref("spend2", "spend"))
    assert lot_of[late.id].remaining == 0 and lot_of[never.id].remaining == 0
    invariants(session)


def test_clawback_draws_the_orders_own_lot_first(session: Session) -> None:
    dust = account(session, "cus_1")
    journal.credit(session, dust, 10, ref(1), expires_at=T0 + timedelta(days=1), order_id="a")
    own = journal.credit(session, dust, 10, ref(2), expires_at=T0 + timedelta(days=9), order_id="b")
    journal.debit(session, dust, 4, ref(3, "clawback"), allow_debt=True, prefer_order_id="b")
    lot = session.scalar(select(Lot).where(Lot.entry_id == own.id))
    assert lot is not None and lot.remaining == 6


def test_debt_clawback_goes_negative_then_credits_repay_it_first(
    session: Session, invariants: Any
) -> None:
    dust = account(session, "cus_1")
    journal.credit(session, dust, 40, ref(1), expires_at=T0 + timedelta(days=5))
    clawback = journal.debit(session, dust, 100, ref(2, "clawback"), allow_debt=True)
    assert dust.balance == -60 and clawback.balance_after == -60
    assert session.scalar(select(Lot.remaining)) == 0
    assert (
        session.scalar(select(LotMovement.amount).where(LotMovement.entry_id == clawback.id)) == 40
    )
    invariants(session)

    # a credit smaller than the debt only repays it: no lot
    journal.credit(session, dust, 50, ref(3))
    assert dust.balance == -10
    assert session.scalar(select(Lot.remaining).where(Lot.remaining > 0)) is None
    invariants(session)

    # a credit larger than the debt repays it and fills a lot with the rest only
    repay = journal.credit(session, dust, 25, ref(4), expires_at=T0 + timedelta(days=7))
    assert dust.balance == 15
    new_lot = session.scalar(select(Lot).where(Lot.entry_id == repay.id))
    assert new_lot is not None and (new_lot.amount, new_lot.remaining) == (15, 15)
    session.commit()
    invariants(session)


def test_spending_in_debt_is_refused(session: Session) -> None:
    dust = account(session, "cus_1")
    journal.debit(session, dust, 5, ref(1, "clawback"), allow_debt=True)
    with pytest.raises(InsufficientFunds):
        journal.debit(session, dust, 1, ref(2, "spend"))
    assert dust.balance == -5


# -- what the database refuses on its own ---------------------------------------------


def _entry(account_id: int, amount: int, key: str | None = None) -> Entry:
    return Entry(
        account_id=account_id,
        direction="credit",
        amount=amount,
        balance_after=amount,
        reason="adjustment",
        reference_type="test",
        reference_id="x",
        idempotency_key=key,
        forgiven=0,
        created_at=utcnow(),
    )


@pytest.mark.parametrize("amount", [0, -1])
def test_database_refuses_non_positive_entries(session: Session, amount: int) -> None:
    dust = account(session, "cus_1")
    session.commit()
    session.add(_entry(dust.id, amount))
    with pytest.raises(IntegrityError):
        session.flush()
    session.rollback()
    assert session.scalar(text("SELECT count(*) FROM dust_entries")) == 0


def test_database_refuses_a_second_dust_account_for_a_customer(session: Session) -> None:
    account(session, "cus_1")
    session.commit()
    session.add(Account(customer_id="cus_1", kind=DUST, balance=0, held=0, created_at=utcnow()))
    with pytest.raises(IntegrityError):
        session.flush()
    session.rollback()
    # ensure_account finds the one that exists instead of opening another
    assert ensure_account(session, "cus_1", DUST) == account(session, "cus_1").id


def test_database_refuses_a_second_store_credit_account_per_currency(session: Session) -> None:
    account(session, "cus_1", STORE_CREDIT, "usd")
    session.commit()
    session.add(
        Account(
            customer_id="cus_1",
            kind=STORE_CREDIT,
            currency_code="usd",
            code="SC-OTHER",
            balance=0,
            held=0,
            created_at=utcnow(),
        )
    )
    with pytest.raises(IntegrityError):
        session.flush()
    session.rollback()


def test_database_refuses_a_duplicate_idempotency_key(session: Session) -> None:
    dust = account(session, "cus_1")
    journal.credit(session, dust, 10, Ref("earn", "order", "o1", "order:o1:earn:0"))
    session.commit()
    dust = account(session, "cus_1")
    with pytest.raises(IntegrityError):
        journal.credit(session, dust, 10, Ref("earn", "order", "o1", "order:o1:earn:0"))
    session.rollback()
    assert session.scalar(text("SELECT count(*) FROM dust_entries")) == 1


@pytest.mark.parametrize(
    "statement",
    ["UPDATE dust_entries SET amount = amount + 1", "DELETE FROM dust_entries"],
)
def test_entries_are_append_only(session: Session, statement: str) -> None:
    dust = account(session, "cus_1")
    journal.credit(session, dust, 10, ref(1))
    session.commit()
    with pytest.raises(DBAPIError, match="append-only"):
        session.execute(text(statement))
    session.rollback()
    assert session.execute(text("SELECT count(*), sum(amount) FROM dust_entries")).one() == (1, 10)


def test_store_credit_balance_below_held_is_refused(session: Session) -> None:
    credit = account(session, "cus_1", STORE_CREDIT, "usd")
    journal.credit(session, credit, 100, ref(1))
    session.commit()
    with pytest.raises(IntegrityError):
        session.execute(
            text("UPDATE dust_accounts SET held = 101 WHERE id = :id"), {"id": credit.id}
        )
        session.flush()
    session.rollback()
    # dust may be held above a balance taken negative by a clawback: no such CHECK there
    dust = account(session, "cus_1")
    session.execute(text("UPDATE dust_accounts SET held = 5 WHERE id = :id"), {"id": dust.id})
    session.flush()


def test_database_refuses_negative_held(session: Session) -> None:
    dust = account(session, "cus_1")
    session.commit()
    with pytest.raises(IntegrityError):
        session.execute(text("UPDATE dust_accounts SET held = -1 WHERE id = :id"), {"id": dust.id})
    session.rollback()
