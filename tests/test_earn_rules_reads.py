"""What the earn rules read, and when: the set-based ``order.placed`` path makes the same
statements with rules in force as without (the groups come from the copy of each
customer's latest group record on the dust account it locks anyway), a rule or a group
record stored between two batches applies to the second, an order placed before its
customer's latest record reads the history, and migration 0007 fills the copy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from statement_counts import statements

from dust.inbox import process_batch
from dust.ledger import rules
from dust.models import Account, Order
from dust.models.schema import upgrade
from dust.worker import db as worker_db

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
#: 10999 total, 999 shipping: base 10000, 100 dust at the default rate 0.01.
ORDER = {"total": 10_999, "shipping_total": 999}


def add(kind: str, **fields: Any) -> int:
    fields.setdefault("starts_at", T0 - timedelta(days=30))
    if "multiplier" in fields:
        fields["multiplier"] = Decimal(str(fields["multiplier"]))
    with worker_db.session_scope() as session:
        return rules.add_rule(session, kind=kind, actor="test", reason="test", **fields).id


def end(rule_id: int, at: datetime) -> None:
    with worker_db.session_scope() as session:
        rules.end_rule(session, rule_id, at, actor="test", reason="test")


def customer_event(
    name: str, groups: list[str], at: datetime, event_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_c_{name}_{at.isoformat()}",
        "name": "customer.updated",
        "occurred_at": at.isoformat(),
        "data": {"id": name, "group_ids": groups},
    }


def placed(order_id: str, customer: str, at: datetime = T0) -> dict[str, Any]:
    return {
        "id": f"evt_{order_id}",
        "name": "order.placed",
        "occurred_at": at.isoformat(),
        "data": {"id": order_id, "customer_id": customer, "currency_code": "usd", **ORDER},
    }


def earned(order_id: str) -> int:
    with worker_db.session_scope() as session:
        order = session.get(Order, order_id)
        assert order is not None
        return order.earned


def batch(envelopes: list[dict[str, Any]]) -> None:
    results = process_batch(envelopes)
    assert [r.status for r in results] == ["processed"] * len(envelopes), results


def test_a_set_based_run_makes_the_same_statements_with_rules_in_force(dust: Any) -> None:
    """Three rules in force, every other customer in a group: a batch of new orders makes
    exactly the statements it makes with no rule (the groups are read with the account
    lock), and earns by the rules. One order at a time reads nothing more either."""
    names = [f"cus_{i}" for i in range(6)]
    batch(
        [customer_event(c, ["vip"] if i % 2 == 0 else [], T0 - HOUR) for i, c in enumerate(names)]
    )

    with statements() as without:
        batch([placed(f"o_a{i}", c) for i, c in enumerate(names)])
    with statements() as one_without:
        dust.process(placed("o_a_one", names[0]))

    add(rules.GROUP_MULTIPLIER, group_id="vip", multiplier=2)
    add(rules.CAMPAIGN, multiplier="1.5")
    add(rules.WELCOME_BONUS, amount=100)
    with statements() as with_rules:
        batch([placed(f"o_b{i}", c) for i, c in enumerate(names)])
    with statements() as one_with_rules:
        dust.process(placed("o_b_one", names[0]))

    assert with_rules == without, (with_rules, without)
    # one at a time: no statement of its own either; the multiplier recorded on the order
    # goes out with the order's other columns (its row is written with the earn's entry)
    assert one_with_rules == one_without, (one_with_rules, one_without)
    assert "SELECT dust_customer_groups" not in with_rules
    assert [earned(f"o_a{i}") for i in range(6)] == [100] * 6
    assert [earned(f"o_b{i}") for i in range(6)] == [300, 150] * 3
    assert (earned("o_a_one"), earned("o_b_one")) == (100, 300)
    dust.check_invariants()


def test_a_rule_added_or_ended_between_two_batches_applies_to_the_next(dust: Any) -> None:
    batch([placed("o_1", "cus_1")])
    campaign = add(rules.CAMPAIGN, multiplier=2)
    batch([placed("o_2", "cus_1"), placed("o_3", "cus_2")])
    end(campaign, T0 - HOUR)
    batch([placed("o_4", "cus_1")])
    assert [earned(f"o_{i}") for i in range(1, 5)] == [100, 200, 200, 100]
    dust.check_invariants()


def test_a_group_record_stored_between_two_batches_is_seen(dust: Any) -> None:
    add(rules.GROUP_MULTIPLIER, group_id="vip", multiplier=2)
    batch([customer_event("cus_1", [], T0 - 3 * HOUR)])
    batch([placed("o_1", "cus_1", T0)])
    batch([customer_event("cus_1", ["vip"], T0 + HOUR)])
    # one run: an order after the latest record (the copy on the account), one before it
    # (the history: not in vip then), one at its very instant (in force from it on)
    batch(
        [
            placed("o_2", "cus_1", T0 + 2 * HOUR),
            placed("o_3", "cus_1", T0 + HOUR / 2),
            placed("o_4", "cus_1", T0 + HOUR),
        ]
    )
    assert [earned(f"o_{i}") for i in range(1, 5)] == [100, 200, 100, 200]
    # and a record that arrives late (before the latest): the copy stays, o_3 is derived again
    batch([customer_event("cus_1", ["vip"], T0 + HOUR / 4)])
    assert earned("o_3") == 200
    with worker_db.session_scope() as session:
        account = session.scalars(select(Account).where(Account.customer_id == "cus_1")).one()
        assert (account.groups_at, account.group_ids) == (T0 + HOUR, '["vip"]')
    dust.check_invariants()


def test_two_records_at_one_instant_the_greater_event_id_is_the_latest(dust: Any) -> None:
    """Whatever order they arrive in, the copy is the record the history reads last."""
    add(rules.GROUP_MULTIPLIER, group_id="vip", multiplier=2)
    at = T0 - HOUR
    for customer, first, second in [("cus_1", "a", "b"), ("cus_2", "b", "a")]:
        for suffix in (first, second):
            groups = ["vip"] if suffix == "b" else []
            batch([customer_event(customer, groups, at, f"evt_{customer}_{suffix}")])
    batch([placed("o_1", "cus_1", at), placed("o_2", "cus_2", at), placed("o_3", "cus_2")])
    assert [earned(f"o_{i}") for i in (1, 2, 3)] == [200, 200, 200]
    with worker_db.session_scope() as session:
        copies = session.execute(
            select(Account.customer_id, Account.groups_event_id)
            .where(Account.kind == "dust")
            .order_by(Account.customer_id)
        ).all()
    assert [tuple(c) for c in copies] == [("cus_1", "evt_cus_1_b"), ("cus_2", "evt_cus_2_b")]
    dust.check_invariants()


def test_record_groups_keeps_the_copy_with_no_rule_in_force(dust: Any) -> None:
    """Group records stored while no group rule exists count once one is added."""
    batch([customer_event("cus_1", ["vip"], T0 - HOUR)])
    batch([customer_event("cus_1", ["gold"], T0 - 2 * HOUR)])  # earlier: not the latest
    add(rules.GROUP_MULTIPLIER, group_id="vip", multiplier=3)
    batch([placed("o_1", "cus_1"), placed("o_2", "cus_1", T0 - HOUR * 1.5)])
    assert (earned("o_1"), earned("o_2")) == (300, 100)
    dust.check_invariants()


# -- migration 0007 ----------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def at_0005(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database migrated to 0005 (a schema of its own on PostgreSQL)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    server = request.getfixturevalue("postgres_url")  # skips when PostgreSQL is unreachable
    schema = f"dust_test_0007_{id(request)}"
    admin = create_engine(server)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = make_url(server).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_migration_0007_copies_each_customers_latest_group_record(at_0005: str) -> None:
    upgrade(at_0005, "0005")
    engine = create_engine(at_0005)

    def stored(at: datetime) -> datetime:  # as the UTC column stores it (naive on SQLite)
        return at.replace(tzinfo=None) if engine.dialect.name == "sqlite" else at

    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO dust_accounts (customer_id, kind, balance, held, created_at)"
                    " VALUES ('cus_1', 'dust', 0, 0, :t), ('cus_3', 'dust', 0, 0, :t)"
                ),
                {"t": stored(T0)},
            )
            records = [
                ("e1", "cus_1", T0 - HOUR, ["a"]),
                ("e3", "cus_1", T0, ["b"]),
                ("e2", "cus_1", T0, ["c"]),
                ("e4", "cus_2", T0 - HOUR, ["vip"]),  # no dust account yet
            ]
            for event_id, customer, at, groups in records:
                connection.execute(
                    text(
                        "INSERT INTO dust_customer_groups"
                        " (event_id, customer_id, occurred_at, group_ids, recorded_at)"
                        " VALUES (:e, :c, :at, :g, :at)"
                    ),
                    {"e": event_id, "c": customer, "at": stored(at), "g": json.dumps(groups)},
                )
        upgrade(at_0005)
        with Session(engine) as session:
            accounts = {
                a.customer_id: (a.groups_at, a.groups_event_id, a.group_ids, a.balance)
                for a in session.scalars(select(Account))
            }
    finally:
        engine.dispose()
    assert accounts == {
        "cus_1": (T0, "e3", '["b"]', 0),
        "cus_2": (T0 - HOUR, "e4", '["vip"]', 0),
        "cus_3": (None, None, None, 0),
    }
