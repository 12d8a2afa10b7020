"""Earn rules over the ledger (``dust.ledger.rules``), driven through ``dust.tasks.inbox.process``:
group multipliers, campaigns (window edges by ``occurred_at``), the cap, a group change that
arrives after the order it precedes, clawbacks with the order's recorded multiplier, the
welcome bonus once, pending dust (not spendable, released by the lot job, clawed back from
pending first), reconciliation of pending dust, and bad rules that change nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, update

from dust.ledger import reconcile, rules
from dust.models import Account, EarnRule, EarnRuleChange, Lot, Order, Reconciliation
from dust.models.base import utcnow
from dust.tasks import runs
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


def customer(dust: Any, name: str, groups: list[str] | None, at: datetime, *, created=True):
    data: dict[str, Any] = {"id": name}
    if groups is not None:
        data["group_ids"] = groups
    event = "customer.created" if created else "customer.updated"
    return dust.send(event, data, occurred_at=at)


def order_row(order_id: str) -> Order:
    with worker_db.session_scope() as session:
        order = session.get(Order, order_id)
        assert order is not None
        return order


def net(order_id: str) -> int:
    order = order_row(order_id)
    return order.earned - order.clawed_back - order.forgiven


def test_a_vip_order_earns_twice_and_records_the_rule(dust: Any) -> None:
    vip = add(rules.GROUP_MULTIPLIER, group_id="vip", multiplier=2)
    customer(dust, "cus_vip", ["vip", "newsletter"], T0 - HOUR)
    customer(dust, "cus_plain", ["newsletter"], T0 - HOUR)
    placed = dust.order("o_vip", "cus_vip", **ORDER)
    dust.order("o_plain", "cus_plain", **ORDER)
    assert dust.dust("cus_vip") == 200 and dust.dust("cus_plain") == 100
    assert placed.detail["earn_rules"] == [vip]
    row = order_row("o_vip")
    assert (row.earn_rate, row.earn_multiplier, json.loads(row.earn_rules or "[]")) == (
        "0.01",
        "2",
        [vip],
    )
    assert order_row("o_plain").earn_multiplier is None


def test_campaign_window_edges_by_occurred_at(dust: Any) -> None:
    start, end = T0, T0 + timedelta(days=3)
    add(rules.CAMPAIGN, multiplier="1.5", starts_at=start, ends_at=end)
    add(rules.CAMPAIGN, multiplier=3, starts_at=start, ends_at=end, currency_code="eur")
    tick = timedelta(microseconds=1)
    for name, at in [
        ("before", start - tick),
        ("start", start),
        ("last", end - tick),
        ("end", end),
    ]:
        dust.order(f"o_{name}", f"cus_{name}", occurred_at=at, **ORDER)
    assert [dust.dust(f"cus_{n}") for n in ("before", "start", "last", "end")] == [
        100,
        150,
        150,
        100,
    ]
    # the eur-only campaign leaves usd orders alone, and applies to eur ones
    dust.send(
        "order.placed",
        {"id": "o_eur", "customer_id": "cus_eur", "currency_code": "EUR", **ORDER},
        occurred_at=start,
    )
    assert dust.dust("cus_eur") == 100 * Decimal("1.5") * 3


def test_multipliers_multiply_and_are_capped(dust: Any, configure: Any) -> None:
    add(rules.GROUP_MULTIPLIER, group_id="vip", multiplier=5)
    add(rules.CAMPAIGN, multiplier=4, starts_at=T0 - HOUR, ends_at=T0 + HOUR)
    customer(dust, "cus_1", ["vip"], T0 - HOUR)
    dust.order("o_1", "cus_1", **ORDER)
    assert dust.dust("cus_1") == 1000  # 5 × 4 = 20, capped at the default 10
    assert order_row("o_1").earn_multiplier == "10"
    configure(DUST_MAX_EARN_MULTIPLIER="3")
    customer(dust, "cus_2", ["vip"], T0 - HOUR)
    dust.order("o_2", "cus_2", **ORDER)
    assert dust.dust("cus_2") == 300


def test_a_group_change_that_arrives_after_the_order_it_precedes(dust: Any) -> None:
    add(rules.GROUP_MULTIPLIER, group_id="vip", multiplier=2)
    customer(dust, "cus_1", [], T0 - 3 * HOUR)
    dust.order("o_1", "cus_1", occurred_at=T0, **ORDER)
    dust.order("o_2", "cus_1", occurred_at=T0 + 2 * HOUR, **ORDER)
    assert dust.dust("cus_1") == 200
    # joined vip an hour before o_1: both orders earn twice
    joined = customer(dust, "cus_1", ["vip"], T0 - HOUR, created=False)
    assert joined.detail == {"regrouped_orders": {"o_1": 100, "o_2": 100}}
    assert dust.dust("cus_1") == 400
    # left vip an hour after o_1 (delivered later still): o_2 only goes back to once
    left = customer(dust, "cus_1", [], T0 + HOUR, created=False)
    assert left.detail == {"regrouped_orders": {"o_2": -100}}
    assert (net("o_1"), net("o_2")) == (200, 100)
    # a record older than all of them, arriving last, is overridden by the later ones
    older = customer(dust, "cus_1", ["vip"], T0 - 2 * HOUR, created=False)
    assert older.detail == {}
    assert dust.dust("cus_1") == 300
    # an update without group_ids says nothing of groups
    customer(dust, "cus_1", None, T0 + 90 * timedelta(minutes=1), created=False)
    assert dust.dust("cus_1") == 300


def test_a_refund_of_a_multiplied_order_claws_back_exactly(dust: Any) -> None:
    vip = add(rules.GROUP_MULTIPLIER, group_id="vip", multiplier="1.5")
    customer(dust, "cus_1", ["vip"], T0 - HOUR)
    dust.order("o_1", "cus_1", total=3_333)
    assert dust.dust("cus_1") == 49  # floor(3333 × 0.01 × 1.5) = floor(49.995)
    # the rule ends before the refund: the clawback still uses the order's multiplier
    with worker_db.session_scope() as session:
        rules.end_rule(session, vip, T0, actor="test", reason="test")
    dust.refund("r_1", "o_1", 1_111)
    assert dust.dust("cus_1") == 33  # floor(2222 × 0.015) = 33: 16 clawed back
    dust.refund("r_2", "o_1", 2_222)
    assert dust.dust("cus_1") == 0
    dust.order("o_2", "cus_1", total=10_000, occurred_at=T0 + HOUR)
    assert dust.dust("cus_1") == 100  # after the end: once


def test_a_welcome_bonus_once(dust: Any) -> None:
    add(rules.WELCOME_BONUS, amount=250, starts_at=T0, ends_at=T0 + timedelta(days=7))
    assert customer(dust, "cus_1", None, T0).detail == {"welcome_bonus": 250}
    customer(dust, "cus_1", ["vip"], T0 + HOUR, created=False)
    again = dust.send("customer.created", {"id": "cus_1"}, occurred_at=T0 + HOUR)
    assert again.status == "processed" and again.detail == {}
    assert dust.dust("cus_1") == 250
    (entry,) = dust.entries(reason="welcome")
    assert (entry.reference_id, entry.idempotency_key) == ("cus_1", "customer:cus_1:welcome")
    # created before the window, or at its (exclusive) end: nothing
    customer(dust, "cus_2", None, T0 - timedelta(seconds=1))
    customer(dust, "cus_3", None, T0 + timedelta(days=7))
    assert dust.dust("cus_2") == dust.dust("cus_3") == 0


# -- pending dust ------------------------------------------------------------------------


def test_pending_dust_is_not_spendable_until_released(dust: Any, configure: Any) -> None:
    configure(DUST_PENDING_DAYS="14")
    now = utcnow()
    dust.grant("cus_1", 30)
    dust.order("o_1", "cus_1", occurred_at=now, **ORDER)
    assert dust.balance("cus_1")["dust"] == {
        "balance": 130,
        "held": 0,
        "pending": 100,
        "available": 30,
    }
    assert dust.reserve("cus_1", "cart_1", 31).status == "rejected"
    charged = dust.order("o_2", "cus_1", total=0, dust_total=40, occurred_at=now)
    assert charged.status == "needs_attention" and charged.detail["shortfall"] == {"dust": 10}
    assert dust.balance("cus_1")["dust"]["pending"] == 100  # spending never drew it
    # the lot job a day too early releases nothing; on time it does, once
    assert runs.run_now("expire_lots", now + timedelta(days=13))["counts"].get("released") is None
    done = runs.run_now("expire_lots", now + timedelta(days=14))
    assert done["counts"]["released"] == 100
    assert runs.run_now("expire_lots", now + timedelta(days=15))["counts"].get("released") is None
    assert dust.balance("cus_1")["dust"] == {
        "balance": 100,
        "held": 0,
        "pending": 0,
        "available": 100,
    }
    with worker_db.session_scope() as session:
        assert reconcile.check_pending(session, (now + timedelta(days=15), utcnow())) == []


@pytest.mark.parametrize("policy", ["debt", "clamp"])
def test_a_refund_in_the_window_claws_back_from_pending_first(
    dust: Any, configure: Any, policy: str
) -> None:
    configure(DUST_PENDING_DAYS="14", DUST_CLAWBACK_POLICY=policy)
    now = utcnow()
    dust.grant("cus_1", 20)
    dust.order("o_1", "cus_1", occurred_at=now, **ORDER)
    dust.refund("r_1", "o_1", 4_000)
    assert dust.balance("cus_1")["dust"] == {
        "balance": 80,
        "held": 0,
        "pending": 60,
        "available": 20,
    }
    dust.cancel("o_1")
    assert dust.balance("cus_1")["dust"] == {
        "balance": 20,
        "held": 0,
        "pending": 0,
        "available": 20,
    }
    assert order_row("o_1").forgiven == 0


def test_an_order_whose_window_is_over_earns_available_dust(dust: Any, configure: Any) -> None:
    configure(DUST_PENDING_DAYS="14")
    dust.order("o_old", "cus_1", occurred_at=utcnow() - timedelta(days=15), **ORDER)
    assert dust.balance("cus_1")["dust"]["available"] == 100


def test_reconciliation_finds_pending_dust_out_of_line(dust: Any, configure: Any) -> None:
    configure(DUST_PENDING_DAYS="14")
    now = utcnow()
    dust.order("o_1", "cus_1", occurred_at=now, **ORDER)
    with worker_db.session_scope() as session:
        assert reconcile.check_pending(session, (now, utcnow())) == []
        # a lot run for a date after the lot's, started after the lot was made: it should
        # have released it; one started before the lot was made could not
        found = reconcile.check_pending(session, (now + timedelta(days=15), utcnow()))
        assert [d["check"] for d in found] == ["pending_overdue"]
        assert reconcile.check_pending(session, (now + timedelta(days=15), now)) == []
        session.execute(update(Account).where(Account.customer_id == "cus_1").values(pending=7))
        found = reconcile.check_pending(session)
        assert found == [
            {"check": "pending", "account_id": found[0]["account_id"], "expected": 100, "actual": 7}
        ]
        session.rollback()
    # through the scheduled job's run: the last lot run's instant counts
    runs.run_now("expire_lots", now + timedelta(days=14))
    with worker_db.session_scope() as session:
        session.execute(update(Lot).values(pending_until=now + timedelta(days=1)))
        session.execute(update(Account).where(Account.customer_id == "cus_1").values(pending=100))
    runs.run_now("reconcile", utcnow())
    with worker_db.session_scope() as session:
        record = session.scalars(select(Reconciliation)).one()
        assert not record.ok
        assert {d["check"] for d in json.loads(record.discrepancies)} == {"pending_overdue"}
    # repair the tampering so the fixture's invariants hold
    with worker_db.session_scope() as session:
        session.execute(update(Lot).values(pending_until=None))
        session.execute(update(Account).values(pending=0))


# -- managing rules ----------------------------------------------------------------------


BAD_RULES = [
    (dict(kind="tier"), "unknown rule kind"),
    (dict(kind=rules.CAMPAIGN, multiplier=Decimal(0)), "> 0 and <= 100"),
    (dict(kind=rules.CAMPAIGN, multiplier=Decimal(101)), "> 0 and <= 100"),
    (dict(kind=rules.CAMPAIGN, multiplier=None), "needs a multiplier"),
    (
        dict(kind=rules.CAMPAIGN, multiplier=Decimal(2), ends_at=T0 - timedelta(days=31)),
        "must be after the start",
    ),
    (dict(kind=rules.GROUP_MULTIPLIER, multiplier=Decimal(2)), "names one group"),
    (dict(kind=rules.WELCOME_BONUS, amount=0), "from 1 to"),
    (dict(kind=rules.WELCOME_BONUS, amount=5, multiplier=Decimal(2)), "an amount only"),
]


@pytest.mark.parametrize(("fields", "says"), BAD_RULES)
def test_a_bad_rule_is_refused_and_changes_nothing(dust: Any, fields: Any, says: str) -> None:
    before = dust.counts()
    with pytest.raises(rules.InvalidRule, match=says), worker_db.session_scope() as session:
        rules.add_rule(session, actor="a", reason="r", starts_at=T0 - timedelta(days=30), **fields)
    assert dust.counts() == before


def test_rules_are_ended_never_edited_and_every_change_is_audited(dust: Any) -> None:
    welcome = add(rules.WELCOME_BONUS, amount=10, starts_at=T0)
    with pytest.raises(rules.InvalidRule, match="in force in that window"):
        add(rules.WELCOME_BONUS, amount=20, starts_at=T0 + HOUR)
    with worker_db.session_scope() as session:
        with pytest.raises(rules.InvalidRule, match="before rule"):
            rules.end_rule(session, welcome, T0 - HOUR, actor="a", reason="r")
        rules.end_rule(session, welcome, T0 + 2 * HOUR, actor="ann", reason="over")
    with worker_db.session_scope() as session:
        with pytest.raises(rules.InvalidRule, match="already ends"):
            rules.end_rule(session, welcome, T0 + 3 * HOUR, actor="a", reason="r")
    later = add(rules.WELCOME_BONUS, amount=20, starts_at=T0 + 2 * HOUR)
    with worker_db.session_scope() as session:
        listed = rules.list_rules(session)
    assert [(r["id"], r["kind"], r["ends_at"]) for r in listed] == [
        (welcome, "welcome-bonus", (T0 + 2 * HOUR).isoformat()),
        (later, "welcome-bonus", None),
    ]
    assert [(c["action"], c["actor"], c["reason"]) for c in listed[0]["changes"]] == [
        ("add", "test", "test"),
        ("end", "ann", "over"),
    ]
    # the database refuses edits and deletes of rules and of their history
    for statement in (
        update(EarnRule).where(EarnRule.id == welcome).values(amount=99),
        update(EarnRule).where(EarnRule.id == welcome).values(ends_at=None),
        update(EarnRuleChange).values(reason="changed"),
        EarnRule.__table__.delete(),
    ):
        with pytest.raises(Exception, match="never|append-only|only ever"):  # noqa: B017
            with worker_db.session_scope() as session:
                session.execute(statement)


# -- replay and backfill -------------------------------------------------------------------


def history(p: str, now: datetime) -> list[dict[str, Any]]:
    """A store's events in time order: customers with groups (one joins vip later, one
    leaves it), orders in and out of a campaign, a refund and a cancel."""

    def envelope(n: int, name: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
        return {"id": f"{p}evt_{n}", "name": name, "occurred_at": at.isoformat(), "data": data}

    def placed(order: str, who: str, total: int) -> dict[str, Any]:
        data = {"id": f"{p}{order}", "customer_id": f"{p}{who}", "currency_code": "usd"}
        return data | {"total": total}

    return [
        envelope(1, "customer.created", now - 9 * HOUR, {"id": f"{p}ann", "group_ids": []}),
        envelope(2, "customer.created", now - 9 * HOUR, {"id": f"{p}bob", "group_ids": ["vip"]}),
        envelope(3, "order.placed", now - 8 * HOUR, placed("o1", "ann", 12_345)),
        envelope(4, "customer.updated", now - 7 * HOUR, {"id": f"{p}ann", "group_ids": ["vip"]}),
        envelope(5, "order.placed", now - 6 * HOUR, placed("o2", "ann", 20_000)),
        envelope(6, "order.placed", now - 5 * HOUR, placed("o3", "bob", 7_777)),
        envelope(7, "customer.updated", now - 4 * HOUR, {"id": f"{p}bob", "group_ids": []}),
        envelope(8, "order.placed", now - 3 * HOUR, placed("o4", "bob", 9_999)),
        envelope(
            9,
            "refund.created",
            now - 2 * HOUR,
            {"id": f"{p}r1", "order_id": f"{p}o2", "amount": 5_001, "currency_code": "usd"}
            | {"to_store_credit": True},
        ),
        envelope(10, "order.canceled", now - HOUR, {"id": f"{p}o3"}),
    ]


def ledger_of(p: str) -> dict[str, Any]:
    """What a ledger is made of for prefix ``p``: each customer's balances and lots
    (summed by expiry and pending date), each order's net earned and recorded rules."""
    with worker_db.session_scope() as session:
        accounts = {
            a.id: a.customer_id.removeprefix(p)
            for a in session.scalars(select(Account).where(Account.customer_id.like(f"{p}%")))
        }
        balances = sorted(
            (accounts[a.id], a.kind, a.balance, a.held, a.pending)
            for a in session.scalars(select(Account).where(Account.id.in_(accounts)))
        )
        lots: dict[tuple[Any, ...], int] = {}
        for lot in session.scalars(select(Lot).where(Lot.account_id.in_(accounts))):
            key = (accounts[lot.account_id], lot.expires_at, lot.pending_until)
            lots[key] = lots.get(key, 0) + lot.remaining
        orders = sorted(
            (
                o.order_id.removeprefix(p),
                o.earned - o.clawed_back - o.forgiven,
                o.earn_multiplier,
                len(json.loads(o.earn_rules or "[]")),
            )
            for o in session.scalars(select(Order).where(Order.order_id.like(f"{p}%")))
        )
    return {"balances": balances, "lots": sorted(lots.items()), "orders": orders}


def test_a_replay_and_a_backfill_give_the_same_ledger(dust: Any, configure: Any) -> None:
    """Live: events late and out of time order, in batches, one recorded ``failed`` and
    replayed at the end. Backfill: the same history in time order, one event at a time
    (what ``dust backfill`` runs). Both leave the same ledger; two backfills the same rows."""
    from dust.tasks import admin, inbox

    configure(DUST_PENDING_DAYS="14")
    now = utcnow().replace(microsecond=0)
    add(rules.GROUP_MULTIPLIER, group_id="vip", multiplier=2, starts_at=now - timedelta(days=1))
    add(rules.CAMPAIGN, multiplier="1.25", starts_at=now - 6 * HOUR, ends_at=now - 3 * HOUR)
    add(rules.WELCOME_BONUS, amount=40, starts_at=now - timedelta(days=1))

    live = history("a_", now)
    arrival = [live[n] for n in (1, 0, 2, 4, 5, 8, 7, 9, 6)]  # vip joins after o1, o2
    inbox.record_failed(live[3], RuntimeError("the database was away"))  # joins vip: later
    inbox.process_batch(arrival[:4])
    inbox.process_batch(arrival[4:])
    replayed = admin.replay.apply(kwargs={"event_id": "a_evt_4", "actor": "test"}).get()
    assert replayed["outcome"] == "processed", replayed
    # o1 (−8 h) came before ann joined (−7 h); o2 (−6 h) after: 2 × 1.25 instead of 1.25
    assert replayed["detail"] == {"regrouped_orders": {"a_o2": 374 - 187}}

    for envelope in history("b_", now):
        assert inbox.process(envelope).status == "processed"
    for envelope in history("c_", now):
        inbox.process(envelope)

    assert ledger_of("a_") == ledger_of("b_") == ledger_of("c_")
    assert ledger_of("b_")["orders"] == [
        ("o1", 123, None, 0),
        ("o2", 374, "2.5", 2),  # floor((20000 − 5001) × 0.01 × 2 × 1.25)
        ("o3", 0, "2.5", 2),  # canceled
        ("o4", 99, None, 0),  # bob left vip at −4 h; the campaign ended at −3 h (exclusive)
    ]
    assert dust.balance("b_ann")["dust"] == {
        "balance": 40 + 123 + 374,
        "held": 0,
        "pending": 123 + 374,
        "available": 40,
    }
