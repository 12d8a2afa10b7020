"""Model-based test of the ledger: Hypothesis drives random sequences of ledger operations
(credit, debit, reserve, capture, release, hold and lot expiry at advancing instants,
clawback under the ``debt`` and ``clamp`` policies, guest refunds and their claim) through
the real ledger functions, each in its own transaction, and the same operations through a
plain Python model of balances, holds and lots. After every step the database must agree
with the model, account by account and lot by lot, and the ledger's invariants must hold.

Runs on SQLite and on PostgreSQL. Each example works on its own customer (the database is
shared by the examples of one test), so only that customer's accounts are compared.
``DUST_HYPOTHESIS_PROFILE=long`` runs many more and longer sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from hypothesis_profiles import LONG, bounded
from sqlalchemy import select

from dust.ledger import holds as holds_
from dust.ledger import journal, orders
from dust.ledger.accounts import ensure_account, lock_accounts, open_anonymous_account
from dust.ledger.adjustments import adjust, claim
from dust.ledger.errors import InsufficientFunds, LedgerError
from dust.ledger.expiry import expire_lots
from dust.ledger.journal import Ref
from dust.models import Account, Hold, Lot
from dust.models.tables import DUST, STORE_CREDIT
from dust.worker.db import session_scope

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
FAR = datetime.max.replace(tzinfo=UTC)
examples = count()
amounts = st.integers(min_value=1, max_value=300)
kinds = st.sampled_from([DUST, STORE_CREDIT])
carts = st.integers(min_value=0, max_value=2)


@dataclass
class MLot:
    expires_at: datetime | None
    order_id: str | None
    amount: int
    remaining: int


@dataclass
class MAccount:
    balance: int = 0
    held: int = 0
    lots: list[MLot] = field(default_factory=list)  # dust only, in creation (id) order


@dataclass
class MHold:
    kind: str
    amount: int
    expires_at: datetime


class LedgerModel(RuleBasedStateMachine):
    """The ledger of one customer (a dust and a ``usd`` store-credit account) and of the
    anonymous accounts its guest refunds open."""

    def __init__(self) -> None:
        super().__init__()
        self.n = next(examples)
        self.customer = f"model_{self.n}"
        self.step = 0
        self.now = T0  # the lot-expiry clock: only moves forward
        self.accounts = {DUST: MAccount(), STORE_CREDIT: MAccount()}
        self.ids: dict[str, int] = {}
        self.holds: dict[tuple[int, str], MHold] = {}  # (cart, kind) -> active hold
        self.anonymous: dict[str, tuple[int, MAccount]] = {}  # code -> (id, account)
        self.claimed: set[str] = set()
        self.expiry_keys: set[datetime] = set()  # as_of instants that posted an expiry
        self.in_debt_once = False
        self.unclawed: dict[int, int] = {}  # order -> earned - clawed back - forgiven

    # -- helpers ---------------------------------------------------------------------

    def key(self, what: str) -> str:
        self.step += 1
        return f"{self.customer}:{what}:{self.step}"

    def locked(self, session: Any, kind: str) -> Account:
        return lock_accounts(session, [self.ids[kind]])[self.ids[kind]]

    def cart(self, n: int) -> str:
        return f"{self.customer}_cart_{n}"

    def order_id(self, n: int) -> str:
        return f"{self.customer}_order_{n}"

    @staticmethod
    def available(account: MAccount) -> int:
        return account.balance - account.held

    def model_credit(self, kind: str, amount: int, expires_at: Any, order_id: Any) -> None:
        account = self.accounts[kind]
        debt = max(0, -account.balance)
        account.balance += amount
        if kind == DUST and amount > debt:
            account.lots.append(MLot(expires_at, order_id, amount - debt, amount - debt))

    def model_debit(self, kind: str, amount: int, prefer: str | None = None) -> None:
        account = self.accounts[kind]
        to_draw = min(amount, max(account.balance, 0))
        account.balance -= amount
        if kind != DUST:
            return

        def order(item: tuple[int, MLot]) -> tuple[Any, ...]:
            index, lot = item
            preferred = 0 if prefer is not None and lot.order_id == prefer else 1
            return (preferred, lot.expires_at is None, lot.expires_at or FAR, index)

        for _, lot in sorted(enumerate(account.lots), key=order):
            if not to_draw:
                break
            take = min(lot.remaining, to_draw)
            lot.remaining -= take
            to_draw -= take
        assert to_draw == 0, "model: lots short"

    # -- set-up ----------------------------------------------------------------------

    @initialize()
    def open_accounts(self) -> None:
        with session_scope() as session:
            self.ids[DUST] = ensure_account(session, self.customer, DUST)
            self.ids[STORE_CREDIT] = ensure_account(session, self.customer, STORE_CREDIT, "usd")

    # -- credits and debits ------------------------------------------------------------

    @rule(
        amount=amounts,
        days=st.none() | st.integers(min_value=1, max_value=40),
        order=st.none() | st.integers(0, 1),
    )
    def credit_dust(self, amount: int, days: int | None, order: int | None) -> None:
        expires_at = None if days is None else T0 + timedelta(days=days)
        order_id = None if order is None else self.order_id(order)
        with session_scope() as session:
            if order_id is None:  # an admin credit: its lot belongs to no order
                adjust(
                    session,
                    customer_id=self.customer,
                    direction="credit",
                    amount=amount,
                    kind=DUST,
                    currency=None,
                    memo="model credit",
                    actor="model",
                    idempotency_key=self.key("credit"),
                    expires_at=expires_at,
                )
            else:  # an order's earn, counted on the order as settle_earnings does
                row = orders.lock_order(session, order_id)
                ref = Ref("earn", "order", order_id, self.key("earn"))
                row.earned += amount
                journal.credit(
                    session,
                    self.locked(session, DUST),
                    amount,
                    ref,
                    expires_at=expires_at,
                    order_id=order_id,
                )
        self.model_credit(DUST, amount, expires_at, order_id)
        if order is not None:
            self.unclawed[order] = self.unclawed.get(order, 0) + amount

    @rule(amount=amounts)
    def credit_store_credit(self, amount: int) -> None:
        with session_scope() as session:
            adjust(
                session,
                customer_id=self.customer,
                direction="credit",
                amount=amount,
                kind=STORE_CREDIT,
                currency="usd",
                memo="model credit",
                actor="model",
            )
        self.model_credit(STORE_CREDIT, amount, None, None)

    @rule(kind=kinds, amount=amounts)
    def debit(self, kind: str, amount: int) -> None:
        fits = amount <= self.available(self.accounts[kind])
        try:
            with session_scope() as session:
                adjust(
                    session,
                    customer_id=self.customer,
                    direction="debit",
                    amount=amount,
                    kind=kind,
                    currency="usd" if kind == STORE_CREDIT else None,
                    memo="model debit",
                    actor="model",
                )
        except InsufficientFunds:
            assert not fits, "refused a debit the available balance covers"
            return
        assert fits, "debited more than available"
        self.model_debit(kind, amount)

    # -- holds -------------------------------------------------------------------------

    @rule(kind=kinds, cart=carts, amount=amounts, ttl=st.sampled_from([60, 3600, 7200]))
    def reserve(self, kind: str, cart: int, amount: int, ttl: int) -> None:
        with session_scope() as session:
            result = holds_.reserve(
                session, self.locked(session, kind), self.cart(cart), amount, ttl
            )
            expires_at = (
                session.get(Hold, result.hold_id).expires_at if result.hold_id is not None else None
            )
        account = self.accounts[kind]
        current = self.holds.get((cart, kind))
        if current is not None and current.amount == amount:
            assert result.status == "reserved" and result.amount == amount
            return
        could_use = self.available(account) + (current.amount if current else 0)
        if amount > could_use:
            assert result.status == "rejected", result
            assert result.available == max(self.available(account), 0)
            return
        assert result.status == "reserved", (result, could_use)
        if current is not None:
            account.held -= current.amount
        account.held += amount
        assert expires_at is not None
        self.holds[(cart, kind)] = MHold(kind, amount, expires_at)
        assert result.available == self.available(account)

    @rule(cart=carts)
    def release(self, cart: int) -> None:
        with session_scope() as session:
            released = holds_.release_cart(session, self.cart(cart))
        expected = 0
        for kind in (DUST, STORE_CREDIT):
            hold = self.holds.pop((cart, kind), None)
            if hold is not None:
                self.accounts[kind].held -= hold.amount
                expected += hold.amount
        assert released == expected

    @precondition(lambda self: bool(self.holds))
    @rule(data=st.data(), amount=st.integers(min_value=0, max_value=400))
    def capture(self, data: st.DataObject, amount: int) -> None:
        cart, kind = data.draw(st.sampled_from(sorted(self.holds)))
        order_id = self.order_id(2)
        with session_scope() as session:
            accounts, active = holds_.lock_cart_holds(session, self.cart(cart))
            (hold,) = [h for h in active if h.account_id == self.ids[kind]]
            ref = Ref("spend", "order", order_id, f"hold:{hold.id}:capture")
            took = holds_.capture(session, accounts[hold.account_id], hold, amount, ref, order_id)
        model_hold = self.holds.pop((cart, kind))
        account = self.accounts[kind]
        expected = min(
            amount, model_hold.amount, max(0, self.available(account) + model_hold.amount)
        )
        assert took == expected
        account.held -= model_hold.amount
        if took:
            self.model_debit(kind, took)

    @precondition(lambda self: bool(self.holds))
    @rule(data=st.data())
    def expire_holds(self, data: st.DataObject) -> None:
        # draw a hold (a deterministic choice: real clock instants are not) and expire
        # everything due by its expiry
        as_of = self.holds[data.draw(st.sampled_from(sorted(self.holds)))].expires_at
        with session_scope() as session:
            holds_.expire_holds(session, as_of)  # every due hold, other examples' too
        for key, hold in list(self.holds.items()):
            if hold.expires_at <= as_of:
                self.accounts[hold.kind].held -= hold.amount
                del self.holds[key]

    # -- lot expiry ----------------------------------------------------------------------

    @rule(days=st.integers(min_value=0, max_value=15), hours=st.integers(0, 23))
    def expire_lots(self, days: int, hours: int) -> None:
        self.now += timedelta(days=days, hours=hours)
        as_of = self.now
        with session_scope() as session:
            expire_lots(session, as_of, reference_id=f"model_{self.n}")
        if as_of in self.expiry_keys:
            return  # expiry:{account}:{as_of} was posted already: a second run does nothing
        account = self.accounts[DUST]
        due = [
            (lot.expires_at, index, lot)
            for index, lot in enumerate(account.lots)
            if lot.remaining and lot.expires_at is not None and lot.expires_at <= as_of
        ]
        take = min(sum(lot.remaining for *_, lot in due), max(0, self.available(account)))
        if not take:
            return
        self.expiry_keys.add(as_of)
        account.balance -= take
        for *_, lot in sorted(due, key=lambda d: (d[0], d[1])):
            portion = min(lot.remaining, take)
            lot.remaining -= portion
            take -= portion

    # -- clawback ------------------------------------------------------------------------

    @precondition(lambda self: any(self.unclawed.values()))
    @rule(policy=st.sampled_from(["debt", "clamp"]), data=st.data())
    def clawback(self, policy: str, data: st.DataObject) -> None:
        order = data.draw(st.sampled_from(sorted(o for o, n in self.unclawed.items() if n)))
        amount = data.draw(st.integers(1, self.unclawed[order]))
        self.unclawed[order] -= amount
        order_id = self.order_id(order)
        with session_scope() as session:
            row = orders.lock_order(session, order_id)
            owed = orders.clawback(
                session,
                self.locked(session, DUST),
                row,
                amount,
                f"evt_{self.key('clawback')}",
                orders.EarnPolicy(365, policy),
            )
        assert owed == amount
        account = self.accounts[DUST]
        take = amount if policy == "debt" else min(amount, max(0, self.available(account)))
        if take:
            self.model_debit(DUST, take, prefer=order_id)
        if policy == "debt" and self.available(account) < 0:
            self.in_debt_once = True

    # -- guest refunds and claims ----------------------------------------------------------

    @rule(amount=amounts)
    def guest_refund(self, amount: int) -> None:
        with session_scope() as session:
            account = open_anonymous_account(session, "USD")
            ref = Ref("refund", "refund", self.key("guest"), self.key("guest_credit"))
            journal.credit(session, account, amount, ref)
            self.anonymous[account.code] = (account.id, MAccount(balance=amount))  # type: ignore[index]

    @precondition(lambda self: bool(self.anonymous))
    @rule(data=st.data())
    def claim_guest_credit(self, data: st.DataObject) -> None:
        code = data.draw(st.sampled_from(list(self.anonymous)))  # in the order opened
        _, anonymous = self.anonymous[code]
        try:
            with session_scope() as session:
                entry = claim(session, code, self.customer, actor="model")
                moved = entry.amount if entry is not None else 0
        except LedgerError as exc:
            assert code in self.claimed, f"refused a first claim: {exc}"
            assert self.customer in str(exc)
            return
        assert code not in self.claimed, "claimed twice"
        assert moved == anonymous.balance
        if moved:
            self.claimed.add(code)
            anonymous.balance = 0
            self.accounts[STORE_CREDIT].balance += moved

    # -- after every step ------------------------------------------------------------------

    @invariant()
    def database_agrees_with_the_model(self) -> None:
        if not self.ids:
            return
        ids = {**self.ids, **{code: id_ for code, (id_, _) in self.anonymous.items()}}
        models = {**self.accounts, **{code: acc for code, (_, acc) in self.anonymous.items()}}
        with session_scope(read_only=True) as session:
            rows = {
                a.id: a
                for a in session.scalars(select(Account).where(Account.id.in_(ids.values())))
            }
            lots = session.execute(
                select(Lot.expires_at, Lot.order_id, Lot.amount, Lot.remaining)
                .where(Lot.account_id == self.ids[DUST])
                .order_by(Lot.id)
            ).all()
            active = session.execute(
                select(Hold.cart_id, Hold.account_id, Hold.amount, Hold.expires_at).where(
                    Hold.account_id.in_([self.ids[DUST], self.ids[STORE_CREDIT]]),
                    Hold.status == "active",
                )
            ).all()
        for name, account_id in ids.items():
            row, model = rows[account_id], models[name]
            assert (row.balance, row.held) == (model.balance, model.held), name
            assert row.held >= 0
            if row.kind == STORE_CREDIT:
                assert row.balance >= row.held, name
            elif row.balance < row.held:
                assert self.in_debt_once, "dust available below zero without a debt clawback"
        dust = self.accounts[DUST]
        assert [tuple(lot) for lot in lots] == [
            (lot.expires_at, lot.order_id, lot.amount, lot.remaining) for lot in dust.lots
        ]
        assert sum(lot.remaining for lot in dust.lots) == max(dust.balance, 0)
        kind_of = {self.ids[DUST]: DUST, self.ids[STORE_CREDIT]: STORE_CREDIT}
        assert sorted(
            (cart, kind_of[account_id], amount, expires_at)
            for cart, account_id, amount, expires_at in active
        ) == sorted(
            (self.cart(cart), kind, hold.amount, hold.expires_at)
            for (cart, kind), hold in self.holds.items()
        )


# The long profile's PostgreSQL half alone takes about 8 min on a quiet 2-core machine;
# a timeout inside an example would be reported as a FlakyFailure (its replay passes).
@pytest.mark.timeout(1800 if LONG else 120)
def test_ledger_agrees_with_a_plain_model(db: str, invariants: Any) -> None:
    run_state_machine_as_test(
        LedgerModel, settings=bounded(20, 1000, stateful_step_count=60 if LONG else 25)
    )
    with session_scope(read_only=True) as session:
        invariants(session)
