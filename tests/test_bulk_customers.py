"""``customer.created`` / ``customer.updated`` applied set-based
(``dust.subscribers.customer_created.prepare_many``, ``dust.ledger.accounts.open_accounts``,
``dust.ledger.rules.record_groups_many`` / ``credit_welcomes``): every row the one-event path
writes (accounts, group records, welcome entries and lots, inbox rows), whatever the
stream and wherever the batches split it; what the set-based path cannot take goes the
one-event way."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis_profiles import LONG, bounded
from sqlalchemy import select
from test_bulk_orders import T0, assert_same_rows, placed, strip

from dust.models import Account, CustomerGroups
from dust.worker import db as worker_db

RUNS = itertools.count()
T_EARLY = "2026-01-01T00:00:00Z"  # before the welcome rule


def customer(p: str, n: str, who: str, name: str = "customer.created", **data: Any) -> Any:
    at = data.pop("occurred_at", T0)
    return {
        "id": f"{p}evt_c{n}",
        "name": name,
        "occurred_at": at,
        "data": {"id": f"{p}{who}", **data},
    }


def groups(p: str) -> list[list[Any]]:
    """The group records of prefix ``p``, and each dust account's copy of the latest."""
    with worker_db.session_scope() as session:
        records = [
            strip(p, [g.event_id, g.customer_id, g.group_ids]) + [g.occurred_at]
            for g in session.scalars(
                select(CustomerGroups)
                .where(CustomerGroups.customer_id.like(f"{p}%"))
                .order_by(CustomerGroups.event_id)
            )
        ]
        copies = [
            strip(p, [a.customer_id, a.groups_event_id, a.group_ids]) + [a.groups_at]
            for a in session.scalars(
                select(Account)
                .where(Account.customer_id.like(f"{p}%"), Account.kind == "dust")
                .order_by(Account.customer_id)
            )
        ]
        return records + copies


@pytest.fixture(autouse=True)
def set_based_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs of customer events go set-based however short (the inbox takes a short run
    with its neighbours instead, ``MIN_BULK_RUN``): the path under test here."""
    from dust import inbox

    monkeypatch.setattr(inbox, "MIN_BULK_RUN", 1)


@pytest.fixture
def bulk_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many events each ``customer_created.prepare_many`` took."""
    from dust import subscribers
    from dust.subscribers import customer_created

    calls: list[int] = []
    real = customer_created.prepare_many

    def spy(session: Any, envelopes: list[Any], context: Any) -> Any:
        prepared = real(session, envelopes, context)
        if prepared is not None:
            calls.append(len(prepared.outcomes))
        return prepared

    for name in ("customer.created", "customer.updated"):
        monkeypatch.setitem(subscribers.BULK_SUBSCRIBERS, name, spy)
    return calls


def add_rules(*kinds: str) -> None:
    from dust.ledger import rules

    starts = datetime(2026, 6, 1, tzinfo=UTC)
    with worker_db.session_scope() as session:
        for kind in kinds:
            fields: dict[str, Any] = {"amount": 250}
            if kind == rules.GROUP_MULTIPLIER:
                fields = {"group_id": "vip", "multiplier": Decimal(2)}
            rules.add_rule(
                session, kind=kind, actor="test", reason="test", starts_at=starts, **fields
            )


def test_a_run_of_customers_writes_the_rows_of_one_event_at_a_time(
    dust: Any, configure: Any, bulk_calls: list[int]
) -> None:
    """Accounts (dust and store credit), group records, welcome bonuses in one run; a
    customer already known, one welcomed before, one created before the rule."""
    from dust.inbox import process_batch

    configure(DUST_DEFAULT_CURRENCY="eur")
    add_rules("welcome_bonus")

    def setup(p: str) -> None:
        dust.process(customer(p, "old", "known"))  # welcomed already
        dust.grant(f"{p}debtor", 5)

    def events(p: str) -> list[dict[str, Any]]:
        return [
            customer(p, "1", "new", group_ids=["vip", "gold", "vip"]),
            customer(p, "2", "known"),  # its bonus was credited before: none now
            customer(p, "3", "early", occurred_at=T_EARLY),  # no rule in force then
            customer(p, "4", "debtor", group_ids=[]),
            customer(p, "5", "other", email="o@example.com"),
        ]

    setup("a_")
    one_at_a_time = [dust.process(e) for e in events("a_")]
    setup("b_")
    assert bulk_calls == []
    results = process_batch(events("b_"))

    assert bulk_calls == [5]
    assert [r.status for r in results] == [r.status for r in one_at_a_time] == ["processed"] * 5
    assert [r.detail for r in results] == [r.detail for r in one_at_a_time]
    assert [r.detail.get("welcome_bonus") for r in results] == [250, None, None, 250, 250]
    assert_same_rows("b_", "a_")
    assert groups("b_") == groups("a_") and len(groups("b_")) == 2 + 5
    assert dust.dust("b_new") == 250 and dust.dust("b_known") == 250
    assert dust.dust("b_debtor") == 255 and dust.store_credit("b_early", "eur") == 0


def test_what_the_set_based_path_cannot_take_goes_one_at_a_time(
    dust: Any, bulk_calls: list[int]
) -> None:
    """An invalid payload, a customer twice in a run and, under a group rule, a group
    record (it may derive placed orders again) go one at a time; the rest set-based."""
    from dust.inbox import process_batch

    add_rules("welcome_bonus", "group_multiplier")

    def events(p: str) -> list[dict[str, Any]]:
        return [
            customer(p, "1", "a"),
            customer(p, "2", "b", group_ids=["x"]),  # taken alone, one at a time
            customer(p, "3", "c"),
            customer(p, "4", "bad "),  # rejected, one at a time
            customer(p, "5", "d"),
            customer(p, "6", "d", name="customer.updated"),  # another name: another run
            placed(p, "1", "vip_buyer", 10_000),
            customer(p, "7", "vip_buyer", name="customer.updated", group_ids=["vip"]),
            customer(p, "8", "e"),
            customer(p, "9", "e", name="customer.created"),  # e twice in the run
        ]

    one_at_a_time = [dust.process(e).status for e in events("a_")]
    results = process_batch(events("b_"))

    # Each set-based run here is cut after one event by what must go one at a time (the
    # rest may go in runs of events locked together, when the inbox has them).
    assert bulk_calls and set(bulk_calls) == {1}
    assert [r.status for r in results] == one_at_a_time
    assert one_at_a_time.count("rejected") == 1
    assert_same_rows("b_", "a_")
    assert groups("b_") == groups("a_")
    assert dust.dust("b_vip_buyer") == 200  # placed before the record, derived again: x2


def test_an_id_already_in_the_inbox_undoes_the_run(
    dust: Any, bulk_calls: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inbox rows go in last: an id recorded ``failed`` before rolls back the run's
    accounts, groups and bonuses; the events then go one at a time (that one a retry)."""
    from dust import inbox

    # All in one transaction, however slow the machine: past its time, the next event
    # would go in a second transaction, set-based again.
    monkeypatch.setattr(inbox, "BATCH_TRANSACTION_SECONDS", 60.0)

    add_rules("welcome_bonus")
    failed = customer("", "f", "cus_f", group_ids=["g"])
    inbox.record_failed(failed, RuntimeError("the database was away"))
    results = inbox.process_batch([customer("", "n", "cus_n"), failed])

    assert bulk_calls == [2]  # the run, rolled back; then both one at a time
    assert [r.status for r in results] == ["processed", "processed"]
    assert dust.event("evt_cf").attempts == 2
    assert dust.dust("cus_f") == 250 and dust.dust("cus_n") == 250
    assert inbox.process_batch([failed])[0].status == "duplicate"
    assert bulk_calls == [2, 1]
    assert dust.dust("cus_f") == 250 and len(groups("cus_f")) == 1 + 1


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[Callable[[str], dict[str, Any]]], list[int]]:
    """customer.created / updated of a few customers (groups or none, before or after the
    welcome rule, invalid ones), redeliveries, the same customer created twice, orders of
    the customers among them; and where the batches split the stream."""
    events: list[Callable[[str], dict[str, Any]]] = []
    for n in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from(["created", "created", "updated", "order", "bad"]))
        who = draw(st.sampled_from(["c0", "c1", "c2", "c3"]))
        data: dict[str, Any] = {}
        if draw(st.booleans()):
            data["group_ids"] = draw(st.lists(st.sampled_from(["vip", "gold"]), max_size=2))
        data["occurred_at"] = draw(st.sampled_from([T0, T_EARLY]))
        if kind == "order":
            total = draw(st.integers(0, 20_000))

            def make(p: str, n: int = n, who: str = who, t: int = total) -> dict[str, Any]:
                return placed(p, str(n), who, t)

        elif kind == "bad":

            def make(p: str, n: int = n) -> dict[str, Any]:
                return customer(p, str(n), "x", email=5)  # email must be text

        else:

            def make(
                p: str, n: int = n, who: str = who, kind: str = kind, d: Any = data
            ) -> dict[str, Any]:
                return customer(p, str(n), who, name=f"customer.{kind}", **d)

        events.append(make)
        if draw(st.integers(0, 3)) == 0:
            events.append(make)  # a redelivery
    events = draw(st.permutations(events))
    cuts = sorted(draw(st.lists(st.integers(1, len(events)), max_size=4)))
    return events, cuts


@pytest.mark.parametrize("min_bulk", [1, 8], ids=["set-based first", "short runs with others"])
@pytest.mark.parametrize(
    "setting",
    ["no rules", "welcome, store credit", "welcome and a group rule"],
)
@pytest.mark.timeout(1800 if LONG else 300)
def test_any_stream_in_any_batches_gives_the_rows_of_one_event_at_a_time(
    dust: Any, configure: Any, setting: str, min_bulk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dust import inbox
    from dust.inbox import process_batch

    monkeypatch.setattr(inbox, "MIN_BULK_RUN", min_bulk)

    if setting != "no rules":
        add_rules("welcome_bonus", *(["group_multiplier"] if "group" in setting else []))
    if "store credit" in setting:
        configure(DUST_DEFAULT_CURRENCY="usd")

    @bounded(12, 300)
    @given(w=streams())
    def check(w: tuple[list[Callable[[str], dict[str, Any]]], list[int]]) -> None:
        events, cuts = w
        run = next(RUNS)
        a, b = f"k{run}a_", f"k{run}b_"
        one_at_a_time = [dust.process(make(a)).status for make in events]
        batched = []
        for start, end in itertools.pairwise([0, *cuts, len(events)]):
            batched += [r.status for r in process_batch([make(b) for make in events[start:end]])]
        assert batched == one_at_a_time
        assert_same_rows(b, a)
        assert groups(b) == groups(a)

    check()


def test_welcomes_of_many_customers_lock_their_accounts_in_one_statement(dust: Any) -> None:
    """``credit_welcomes`` takes each customer once; a bonus credited since (by another
    transaction, before these locks) is found under the lock and not credited again."""
    from dust.ledger import rules
    from dust.ledger.orders import EarnPolicy

    add_rules("welcome_bonus")
    at = datetime(2026, 11, 20, tzinfo=UTC)
    policy = EarnPolicy(365, "debt")
    with worker_db.session_scope() as session:
        assert rules.credit_welcome(session, "w1", at, "e0", policy) == 250
    with worker_db.session_scope() as session:
        welcomes = [rules.Welcome(c, at, f"e{c}") for c in ("w1", "w2", "w3")]
        assert rules.credit_welcomes(session, welcomes, policy) == {"w2": 250, "w3": 250}
        with pytest.raises(ValueError):
            rules.credit_welcomes(session, [welcomes[1], welcomes[1]], policy)
    with worker_db.session_scope() as session:
        early = [rules.Welcome("w4", at - timedelta(days=365), "e4")]
        assert rules.credit_welcomes(session, early, policy) == {}
    assert [dust.dust(c) for c in ("w1", "w2", "w3", "w4")] == [250, 250, 250, 0]
