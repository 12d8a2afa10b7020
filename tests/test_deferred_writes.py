"""The runs of a batch write set-based (``dust.ledger.journal.deferred``): charges, refunds
and cancels post their entries, lots and draws in memory, and the run writes them in a few
statements, whatever its length. What they write is the ledger of one event at a time
(``test_bulk_orders``'s equivalence test covers every kind); here: the statements, the lot
draw order, and the ids handed out ahead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session
from statement_counts import statements

from dust.ledger import journal
from dust.ledger.accounts import ensure_account, lock_accounts
from dust.ledger.journal import Ref
from dust.models import Entry
from dust.models.tables import DUST, STORE_CREDIT
from dust.worker import db as worker_db

T0 = "2026-11-20T10:00:00Z"


def placed(p: str, n: int, customer: str, total: int, **data: Any) -> dict[str, Any]:
    return {
        "id": f"{p}evt_{n}",
        "name": "order.placed",
        "occurred_at": T0,
        "data": {
            "id": f"{p}ord_{n}",
            "customer_id": f"{p}{customer}",
            "currency_code": "usd",
            "total": total,
            **data,
        },
    }


def mixed(p: str, n: int) -> list[dict[str, Any]]:
    """``n`` events of the kinds that go in runs: orders paying dust (every other one from
    its cart's hold), refunds (every other one to store credit, some giving dust back) and
    cancels of the orders placed first, on ``n // 2`` customers."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        customer = f"c{i % max(1, n // 2)}"
        if i % 3 == 0:
            out.append(placed(p, 1000 + i, customer, 5_000, dust_total=40, cart_id=f"{p}cart_{i}"))
        elif i % 3 == 1:
            data = {"id": f"{p}ref_{i}", "order_id": f"{p}ord_{i}", "amount": 1_000}
            data |= {"currency_code": "usd", "to_store_credit": i % 2 == 0}
            data["dust_amount"] = 10 if i % 4 == 1 else 0
            out.append({"id": f"{p}evt_r{i}", "name": "refund.created", "data": data})
        else:
            out.append(
                {"id": f"{p}evt_x{i}", "name": "order.canceled", "data": {"id": f"{p}ord_{i}"}}
            )
    return out


def prepare(dust: Any, p: str, n: int) -> None:
    """The customers' dust, the orders the refunds and cancels name (those that cancels
    name paid 30 dust), and the holds of the charging carts."""
    for c in range(max(1, n // 2)):
        dust.grant(f"{p}c{c}", 1_000)
        dust.grant(f"{p}c{c}", 100, kind=STORE_CREDIT, currency="usd")  # its account open
    for i in range(n):
        customer = f"c{i % max(1, n // 2)}"
        if i % 3 == 0 and i % 2 == 0:
            assert dust.reserve(f"{p}{customer}", f"{p}cart_{i}", 40).status == "reserved"
        elif i % 3:
            order = placed(p, i, customer, 20_000, dust_total=30)
            assert dust.process(order).status == "processed"


def test_a_run_writes_in_the_same_statements_whatever_its_length(dust: Any) -> None:
    """A run of 6 charges, refunds and cancels and a run of 60 make the same statements but
    for the ids fetched ahead (one per 64 entries or lots): nothing goes one event at a time."""
    from dust.inbox import process_batch

    counts = {}
    for p, n in (("s_", 6), ("l_", 60)):
        prepare(dust, p, n)
        with statements() as seen:
            results = process_batch(mixed(p, n))
        assert {r.status for r in results} == {"processed"}, results
        counts[n] = seen

    def kept(shape: str) -> bool:  # not the ids fetched ahead (SQLite: the largest id)
        ids = ("SELECT dust_entries", "SELECT dust_lots", "SELECT dust_lot_movements")
        return "nextval" not in shape and shape not in ids

    short = {k: v for k, v in counts[6].items() if kept(k)}
    long = {k: v for k, v in counts[60].items() if kept(k)}
    assert long == short, (short, long)
    assert sum(counts[60].values()) < 40
    dust.check_invariants()


def test_a_run_reads_no_refunds_or_charges_of_the_orders_it_creates(dust: Any) -> None:
    """Refunds and charges are written only under their order's lock: an order whose row
    the run's transaction created has none, so a run of new orders paying dust reads
    neither; one with an order placed before reads them, for that order only. The ledger
    is the one of the same events one at a time."""
    from dust.inbox import process_batch

    def new(p: str, numbers: range) -> list[dict[str, Any]]:
        return [placed(p, n, f"c{n % 3}", 5_000, dust_total=20) for n in numbers]

    def cancel(p: str) -> dict[str, Any]:
        return {"id": f"{p}evt_x0", "name": "order.canceled", "data": {"id": f"{p}ord_0"}}

    for p in ("a_", "b_"):
        for c in range(3):
            dust.grant(f"{p}c{c}", 1_000)
        assert dust.process(placed(p, 0, "c0", 20_000, dust_total=30)).status == "processed"
    for envelope in [*new("a_", range(1, 7)), *new("a_", range(7, 10)), cancel("a_")]:
        assert dust.process(envelope).status == "processed"
    sent: list[str] = []

    def keep(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(" ".join(statement.split()))

    def reads_of_orders(envelopes: list[dict[str, Any]]) -> list[str]:
        sent.clear()
        engine = worker_db.get_engine()
        event.listen(engine, "before_cursor_execute", keep)
        try:
            results = process_batch(envelopes)
        finally:
            event.remove(engine, "before_cursor_execute", keep)
        assert {r.status for r in results} == {"processed"}, results
        spends = "FROM dust_entries JOIN dust_accounts"  # charging.load_spends
        return [q for q in sent if "FROM dust_refunds" in q or spends in q]

    assert reads_of_orders(new("b_", range(1, 7))) == []
    assert len(reads_of_orders([*new("b_", range(7, 10)), cancel("b_")])) == 2  # ord_0's
    for c in range(3):
        assert dust.snapshot(f"b_c{c}") == dust.snapshot(f"a_c{c}")
    dust.check_invariants()


def test_draws_in_memory_take_the_lots_a_debit_takes_alone(dust: Any) -> None:
    """Soonest-expiring first, lots that never expire last, pending lots never for a
    spend: the order of ``journal.draw_order``, on both paths."""
    from dust.inbox import process_batch

    base = datetime(2027, 1, 1, tzinfo=UTC)
    for p in ("a_", "b_"):
        for days, amount in ((90, 30), (10, 20), (400, 25)):
            dust.grant(f"{p}c0", amount, expires_at=base + timedelta(days))
        dust.grant(f"{p}c0", 15)  # never expires
    one = [placed("a_", i, "c0", 1_000, dust_total=d) for i, d in enumerate((25, 40, 10))]
    for envelope in one:
        assert dust.process(envelope).status == "processed"
    two = [placed("b_", i, "c0", 1_000, dust_total=d) for i, d in enumerate((25, 40, 10))]
    assert [r.status for r in process_batch(two)] == ["processed"] * 3
    assert dust.lots("a_c0") == dust.lots("b_c0")
    # The 20 of day 10 and the 30 of day 90 spent first, never the 15 that never expire.
    open_lots = {at: remaining for at, remaining, _amount in dust.lots("b_c0")}
    assert base + timedelta(10) not in open_lots
    assert base + timedelta(90) not in open_lots
    assert open_lots[None] == 15


def test_a_run_reads_an_accounts_first_lots_and_the_rest_only_when_a_debit_needs_them(
    dust: Any, backend: str
) -> None:
    """A customer with many lots: a run reads the first ``journal.LOT_PAGE`` in draw order
    and the lots of the orders it may claw back (PostgreSQL; SQLite reads all); a debit
    that goes past them reads the rest first. The lots drawn are those of one at a time."""
    from dust.inbox import process_batch
    from dust.models import Lot

    base = datetime(2027, 1, 1, tzinfo=UTC)
    for p in ("a_", "b_"):
        for days in range(10, 130, 10):  # twelve lots before the page's end and after it
            dust.grant(f"{p}c0", 10, expires_at=base + timedelta(days))
        dust.grant(f"{p}c0", 50)  # never expires
        # Earns 100 dust in a lot expiring after all of those: a refund claws it back.
        assert dust.process(placed(p, 1, "c0", 10_000)).status == "processed"

    def refund(p: str, n: int) -> dict[str, Any]:
        data = {"id": f"{p}ref_{n}", "order_id": f"{p}ord_1", "amount": 2_000}
        data |= {"currency_code": "usd", "to_store_credit": False}
        return {"id": f"{p}evt_r{n}", "name": "refund.created", "occurred_at": T0, "data": data}

    def first(p: str) -> list[dict[str, Any]]:
        return [placed(p, 2, "c0", 1_000, dust_total=15), refund(p, 1)]  # the first lots do

    def second(p: str) -> list[dict[str, Any]]:
        return [
            refund(p, 2),  # the refunded order's lot is read with the first lots
            # Past the first lots: the rest is read before any lot after them is drawn
            # (the refunded order's is after the lots expiring sooner, not yet read).
            placed(p, 3, "c0", 1_000, dust_total=100),
            placed(p, 4, "c0", 1_000, dust_total=5),
        ]

    for envelope in first("a_") + second("a_"):
        assert dust.process(envelope).status == "processed"
    loaded: list[int] = []

    def count(target: Any, _context: Any) -> None:
        loaded.append(target.id)

    event.listen(Lot, "load", count)
    try:
        assert [r.status for r in process_batch(first("b_"))] == ["processed"] * 2
        in_first = len(loaded)
        assert [r.status for r in process_batch(second("b_"))] == ["processed"] * 3
    finally:
        event.remove(Lot, "load", count)

    assert dust.lots("b_c0") == dust.lots("a_c0")
    assert dust.snapshot("b_c0") == dust.snapshot("a_c0")
    if backend == "postgresql":
        assert in_first == journal.LOT_PAGE + 1  # the page, and the refunded order's lot
        assert len(loaded) > in_first + journal.LOT_PAGE  # the second run read them all
    dust.check_invariants()


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.services)], indirect=True
)
def test_ids_handed_out_ahead_keep_each_accounts_entries_in_write_order(
    dust: Any, backend: str
) -> None:
    """A transaction that fetched ids ahead, then locks an account another transaction
    wrote to since, gives its entry there a newer id than that one's: an account's entries
    in id order are the order they were written (the journal chain reads them so)."""
    dust.grant("x", 100)
    dust.grant("y", 100)
    engine = worker_db.get_engine()
    ref = Ref("adjustment", "test", "t")
    with Session(engine) as first, first.begin():
        with journal.deferred(first):
            x = ensure_account(first, "x", DUST)
            account_x = lock_accounts(first, [x])[x]
            journal.credit(first, account_x, 5, ref)  # ids fetched ahead, for x only
            with Session(engine) as second, second.begin():
                y = ensure_account(second, "y", DUST)
                journal.credit(second, lock_accounts(second, [y])[y], 7, ref)
            account_y = lock_accounts(first, [y])[y]
            journal.credit(first, account_y, 11, ref)
            journal.flush_deferred(first)
    with Session(engine) as session:
        rows = session.execute(
            select(Entry.amount, Entry.balance_after)
            .where(Entry.account_id == y)
            .order_by(Entry.id)
        ).all()
    assert [tuple(r) for r in rows] == [(100, 100), (7, 107), (11, 118)]
    dust.check_invariants()


def test_a_batch_locks_the_accounts_of_all_its_events_first(dust: Any) -> None:
    """Before any event of a batch is applied, the accounts all its events touch are
    locked in one statement (id order): every later step finds them locked, so two
    workers' batches always take them in one order and cannot deadlock."""
    from dust.inbox import process_batch

    prepare(dust, "k_", 6)
    events = [placed("k_", 900 + i, "c2", 1_000) for i in range(8)]  # set-based, first
    events += mixed("k_", 6)
    locks: list[str] = []
    engine = worker_db.get_engine()

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        flat = " ".join(statement.split())
        if flat.startswith("SELECT dust_accounts.id") and "customer_id IN" in flat:
            locks.append(repr(parameters))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        results = process_batch(events)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert {r.status for r in results} == {"processed"}
    assert all(f"k_c{c}" in locks[0] for c in range(3)), locks[0]


def test_what_is_not_an_id_is_not_locked_first(dust: Any) -> None:
    """The ids a batch locks first are read from payloads not yet validated: a value that
    is no id (NUL, too long, not text) is skipped there, and its event is rejected as it
    would be alone, beside the others applied."""
    from dust.inbox import process_batch

    prepare(dust, "n_", 6)
    bad = [
        {"id": "n_evt_bad1", "name": "order.canceled", "data": {"id": "n_ord\x00_1"}},
        {"id": "n_evt_bad2", "name": "order.placed", "data": {"id": "x" * 5000, "total": 1}},
        {"id": "n_evt_bad3", "name": "refund.created", "data": {"order_id": ["n_ord_1"]}},
    ]
    events = mixed("n_", 6)
    results = process_batch(events[:2] + bad + events[2:])
    statuses = [r.status for r in results]
    assert statuses == ["processed"] * 2 + ["rejected"] * 3 + ["processed"] * 4, results
    dust.check_invariants()
