"""``order.placed`` applied set-based (``dust.subscribers.order_placed.prepare_many``,
``dust.ledger.orders.place_new``, ``dust.ledger.journal.credit_many``): every row it writes is the row
the one-event path writes, and whatever it cannot take goes the one-event way."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import Phase, given
from hypothesis import strategies as st
from hypothesis_profiles import LONG, bounded
from sqlalchemy import select

from dust.models import Account, Entry, Event, Hold, Lot, LotMovement, Order, Refund
from dust.models.tables import STORE_CREDIT
from dust.worker import db as worker_db

T0 = "2026-11-20T10:00:00Z"
T1 = "2026-11-21T09:30:00+01:00"
RUNS = itertools.count()


def placed(p: str, n: str, customer: str | None, total: int, **data: Any) -> dict[str, Any]:
    return {
        "id": f"{p}evt_{n}",
        "name": "order.placed",
        "occurred_at": data.pop("occurred_at", T0),
        "data": {
            "id": f"{p}ord_{n}",
            "customer_id": customer and f"{p}{customer}",
            "currency_code": "USD",
            "total": total,
            **data,
        },
    }


def history(p: str) -> list[dict[str, Any]]:
    """One at a time for both: a dust-only product, and a customer in debt (earned 100,
    spent it and earned 1, then the first order was refunded: the clawback of 100 leaves
    the balance at −99)."""
    product = {"id": f"{p}prod_dust", "metadata": {"dust_only": True, "dust_price": 500}}
    return [
        {"id": f"{p}evt_p", "name": "product.updated", "occurred_at": T0, "data": product},
        placed(p, "h0", "debtor", 10_000),
        placed(p, "h1", "debtor", 200, dust_total=100),  # 100 of it paid with dust
        {
            "id": f"{p}evt_r",
            "name": "refund.created",
            "occurred_at": T0,
            "data": {
                "id": f"{p}ref_h0",
                "order_id": f"{p}ord_h0",
                "amount": 10_000,
                "currency_code": "usd",
                "to_store_credit": True,
            },
        },
    ]


def batch(p: str) -> list[dict[str, Any]]:
    items = [
        {"id": "i1", "product_id": f"{p}prod_dust", "total": 5_000},
        {"id": "i2", "product_id": f"{p}prod_plain", "total": 7_777},
        {"id": "i3", "total": 1_234},
    ]
    return [
        placed(p, "1", "new", 20_000, items=items, shipping_total=500, occurred_at=T1),
        placed(p, "2", None, 50_000),  # a guest
        placed(p, "3", "debtor", 3_050),  # 30: all of it repays debt, no lot
        placed(p, "4", "new", 9_999, shipping_total=999, tax_total=1_000),
        placed(p, "5", "zero", 99),  # earns 0, yet its account is opened
        placed(p, "6", "debtor", 15_000, cart_id=f"{p}cart_6"),  # 150: 69 repays, lot 81
        placed(p, "7", "other", 12_345, items=None),
        # a gift card bought and money paid with one: neither earns (2_000 − 1_000 = 10)
        placed(
            p,
            "8",
            "new",
            6_000,
            items=[
                {"id": "g1", "total": 4_000, "is_giftcard": True},
                {"id": "g2", "total": 2_000, "is_giftcard": False},
            ],
            gift_card_total=1_000,
            raw={"total": "60.004", "tax_total": "0"},
        ),
        # items that claim more than the goods cost: the goods' 3_000 earn 30
        placed(p, "9", "other", 3_500, items=[{"id": "x", "total": 10_000}], shipping_total=500),
    ]


def assert_same_rows(p: str, q: str) -> None:
    mine, theirs = state(p), state(q)
    for table, rows in theirs.items():
        assert len(mine[table]) == len(rows), table
        for row, their_row in zip(mine[table], rows, strict=True):
            assert row == their_row, table


def strip(p: str, value: Any) -> Any:
    if isinstance(value, str):  # and store-credit codes (random), the test's grant numbers
        value = re.sub(r"SC-[A-Z2-7-]+", "SC-…", value.replace(p, ""))
        return re.sub(r"grant_\d+", "grant_…", value)
    if isinstance(value, list | tuple):
        return [strip(p, v) for v in value]
    return value


def state(p: str) -> dict[str, Any]:
    """Every row the events of prefix ``p`` wrote, without ids, prefix or write times.
    Each account's entries, lots and holds in their order; accounts in their owners'
    order, not in the order they were opened: a batch may apply the events of different
    customers in another order than one at a time (``dust.inbox._apply_first``)."""
    with worker_db.session_scope() as session:
        owner = {
            a.id: (a.customer_id, a.kind, a.currency_code or "")
            for a in session.scalars(select(Account).where(Account.customer_id.like(f"{p}%")))
        }

        def by_account(model: Any) -> list[Any]:
            """The rows of the prefix's accounts: each account's in id order."""
            rows = session.scalars(select(model).order_by(model.id))
            return sorted(
                (r for r in rows if r.account_id in owner), key=lambda r: owner[r.account_id]
            )

        def places(rows: list[Any]) -> dict[int, str]:
            """Each row's id: its place among its account's rows."""
            seen: dict[int, int] = {}
            at: dict[int, str] = {}
            for row in rows:
                seen[row.account_id] = seen.get(row.account_id, -1) + 1
                at[row.id] = f"{strip(p, owner[row.account_id])}#{seen[row.account_id]}"
            return at

        accounts = [
            strip(p, [*owner[a.id], a.balance, a.held, a.pending])
            for a in sorted(session.scalars(select(Account)), key=lambda a: owner.get(a.id, ()))
            if a.id in owner
        ]
        all_entries, all_lots, all_holds = by_account(Entry), by_account(Lot), by_account(Hold)
        entry_at, lot_at, hold_at = places(all_entries), places(all_lots), places(all_holds)

        def key(value: str | None) -> str | None:
            """An idempotency key naming an entry (a cancel's or a refund's give-back of a
            spend) or a hold (its capture) names it by its place among its account's:
            ids differ between runs."""
            if value is None:
                return None
            value = re.sub(
                r"^(order:.*:cancel:|refund:.*:dust:)(\d+)$",
                lambda m: f"{m[1]}{entry_at[int(m[2])]}",
                value,
            )
            return re.sub(r"^hold:(\d+):", lambda m: f"hold:{hold_at[int(m[1])]}:", value)

        entries = [
            strip(p, [*owner[e.account_id], e.direction, e.amount, e.balance_after, e.reason])
            + strip(p, [e.reference_type, e.reference_id, key(e.idempotency_key), e.event_id])
            + [e.forgiven]
            for e in all_entries
        ]
        lots = [
            strip(p, [*owner[lot.account_id], lot.amount, lot.remaining, lot.order_id])
            + [lot.expires_at, lot.pending_until]
            for lot in all_lots
        ]
        columns = [c.key for c in Order.__table__.columns]
        orders = [
            strip(p, [getattr(o, c) for c in columns])
            for o in session.scalars(
                select(Order).where(Order.order_id.like(f"{p}%")).order_by(Order.order_id)
            )
        ]
        movements = sorted(
            [entry_at[m.entry_id], lot_at[m.lot_id], m.amount]
            for m in session.scalars(select(LotMovement))
            if m.entry_id in entry_at
        )
        holds = [
            strip(p, [*owner[h.account_id], h.cart_id, h.amount, h.captured, h.status, h.order_id])
            for h in all_holds
        ]
        refunds = [
            strip(p, [r.refund_id, r.order_id, r.customer_id, r.amount, r.to_store_credit])
            + strip(p, [r.dust_amount, r.dust_returned, r.status, r.held_reason, r.event_id])
            + [r.credit_entry_id is not None and entry_at.get(r.credit_entry_id, "anonymous")]
            for r in session.scalars(
                select(Refund).where(Refund.order_id.like(f"{p}%")).order_by(Refund.refund_id)
            )
        ]
        events = [
            strip(p, [e.event_id, e.name, e.status, e.reason, e.detail, e.attempts])
            + [e.occurred_at, e.processed_at is not None]
            for e in session.scalars(
                select(Event).where(Event.event_id.like(f"{p}%")).order_by(Event.event_id)
            )
        ]
    return {
        "accounts": accounts,
        "entries": entries,
        "lots": lots,
        "orders": orders,
        "events": events,
        "movements": movements,
        "holds": holds,
        "refunds": refunds,
    }


@pytest.fixture
def bulk_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """``(orders, applied)`` of every ``dust.ledger.orders.place_new`` call."""
    from dust import inbox
    from dust.ledger import orders

    # The set-based path first, whatever the length of the run of new orders.
    monkeypatch.setattr(inbox, "MIN_BULK_RUN", 1)
    calls: list[tuple[int, bool]] = []
    real = orders.place_new

    def spy(session: Any, new: list[Any], policy: Any) -> bool:
        applied = real(session, new, policy)
        calls.append((len(new), applied))
        return applied

    monkeypatch.setattr(orders, "place_new", spy)
    return calls


def test_a_run_of_new_orders_writes_the_rows_of_one_event_at_a_time(
    dust: Any, bulk_calls: list[tuple[int, bool]]
) -> None:
    from dust.inbox import process_batch

    for envelope in history("a_") + batch("a_"):
        dust.process(envelope)
    for envelope in history("b_"):
        dust.process(envelope)
    assert bulk_calls == []
    results = process_batch(batch("b_"))

    assert bulk_calls == [(9, True)]
    assert [r.status for r in results] == ["processed"] * 9
    assert_same_rows("b_", "a_")
    assert dust.dust("b_debtor") == 81
    assert [lot[1:] for lot in dust.lots("b_debtor")] == [(81, 81)]
    assert dust.dust("b_new") == (7_777 + 1_234) // 100 + (9_999 - 999 - 1_000) // 100 + 10
    assert dust.dust("b_other") == 123 + 30


def test_what_the_set_based_path_cannot_take_goes_one_at_a_time(
    dust: Any, bulk_calls: list[tuple[int, bool]]
) -> None:
    """A refund that came first (the order has a row), a cart that holds dust, a payload
    that is not valid, a charge, an id seen before: each such event goes one at a time,
    the others set-based around it, and every row is the row of one event at a time."""
    from dust.inbox import process_batch

    def customer(p: str, name: str) -> dict[str, Any]:
        data = {"id": f"{p}{name}"}
        return {"id": f"{p}evt_{name}", "name": "customer.created", "occurred_at": T0, "data": data}

    def setup(p: str) -> None:
        for envelope in history(p):
            dust.process(envelope)
        dust.grant(f"{p}holder", 50)
        assert dust.reserve(f"{p}holder", f"{p}cart_6", 20).status == "reserved"

    def events(p: str) -> list[dict[str, Any]]:
        early_refund = {
            "id": f"{p}evt_early",
            "name": "refund.created",
            "occurred_at": T0,
            "data": {
                "id": f"{p}ref_early",
                "order_id": f"{p}ord_3",
                "amount": 1_000,
                "currency_code": "usd",
                "to_store_credit": True,
            },
        }
        runs = batch(p)
        return [
            early_refund,  # ord_3 gets a row: its order.placed below is not new
            *runs[:4],  # ord_1, ord_2 and ord_4 go first, set-based; ord_3 stays in place
            customer(p, "x"),  # the new customers go first too, set-based
            *runs[4:6],  # ord_5 goes first; ord_6 is the debtor's, after ord_3: in place
            customer(p, "y"),
            placed(p, "bad", "new", -5),  # not valid: the orders going first stop here
            runs[6],  # ord_7: in place, set-based on its own
            customer(p, "z"),
            placed(p, "charging", "debtor", 100, dust_total=10),  # charges: in a run
            runs[6],  # seen before (its order has a row): a duplicate
            customer(p, "w"),
            placed(p, "8", "late", 3_000),  # ord_8 and ord_9: in place, set-based together
            placed(p, "9", "late", 4_000),
        ]

    setup("a_")
    one_at_a_time = [dust.process(envelope).status for envelope in events("a_")]
    setup("b_")
    results = process_batch(events("b_"))

    assert bulk_calls == [(4, True), (1, True), (2, True)]
    assert [r.status for r in results] == one_at_a_time
    assert one_at_a_time.count("processed") == 15
    assert_same_rows("b_", "a_")


def test_the_set_based_path_applies_the_earn_rules(
    dust: Any, configure: Any, bulk_calls: list[tuple[int, bool]]
) -> None:
    """Group multipliers, a campaign and pending dust, set-based: the rows of one event at
    a time, the account locked before the groups are read."""
    from datetime import timedelta
    from decimal import Decimal

    from dust.inbox import process_batch
    from dust.ledger import rules
    from dust.models.base import utcnow

    configure(DUST_PENDING_DAYS="14")
    now = utcnow().replace(microsecond=0)
    with worker_db.session_scope() as session:
        for kind, fields in [
            (rules.GROUP_MULTIPLIER, {"group_id": "vip", "multiplier": Decimal(2)}),
            (
                rules.CAMPAIGN,
                {"multiplier": Decimal("1.5"), "ends_at": now + timedelta(hours=1)},
            ),
            (rules.WELCOME_BONUS, {"amount": 50}),
        ]:
            fields["starts_at"] = now - timedelta(days=1)
            rules.add_rule(session, kind=kind, actor="test", reason="bench", **fields)

    def customers(p: str) -> list[dict[str, Any]]:
        return [
            {
                "id": f"{p}evt_c_{name}",
                "name": "customer.created",
                "occurred_at": (now - timedelta(hours=2)).isoformat(),
                "data": {"id": f"{p}{name}", "group_ids": groups},
            }
            for name, groups in [("vip", ["vip"]), ("plain", []), ("late", ["vip"])]
        ]

    def orders(p: str) -> list[dict[str, Any]]:
        at = (now - timedelta(minutes=5)).isoformat()
        after = (now + timedelta(hours=2)).isoformat()
        return [
            placed(p, "1", "vip", 10_000, occurred_at=at),  # 2 x 1.5
            placed(p, "2", "plain", 10_000, occurred_at=at),  # 1.5
            placed(p, "3", None, 10_000, occurred_at=at),  # a guest: nothing
            placed(p, "4", "vip", 10_000, occurred_at=after),  # after the campaign: 2
            placed(p, "5", "nobody", 10_000, occurred_at=after),  # no groups known: 1
        ]

    for envelope in customers("a_") + orders("a_"):
        dust.process(envelope)
    for envelope in customers("b_"):
        dust.process(envelope)
    assert bulk_calls == []
    results = process_batch(orders("b_"))

    assert bulk_calls == [(5, True)]
    assert [r.status for r in results] == ["processed"] * 5
    assert [r.detail["earned"] for r in results] == [300, 150, 0, 200, 100]
    assert_same_rows("b_", "a_")
    assert dust.balance("b_vip")["dust"] == {
        "balance": 550,
        "held": 0,
        "pending": 500,
        "available": 50,
    }


@st.composite
def workloads(
    draw: st.DrawFn,
) -> tuple[list[Callable[[str], dict[str, Any]]], list[int], int]:
    """Orders of a few customers (guests too), items with a dust-only product or none, some
    refunded or canceled before or after they are placed, some placed twice (a redelivery,
    or a second event for the same order), some paying with dust and store credit, in any
    arrival order; where the batches split the stream; and how many new orders in a row
    go set-based first (``MIN_BULK_RUN``)."""
    events: list[Callable[[str], dict[str, Any]]] = []
    for n in range(draw(st.integers(1, 8))):
        customer = draw(st.sampled_from(["c0", "c1", "c2", None]))
        total = draw(st.integers(0, 30_000))
        data: dict[str, Any] = {}
        if draw(st.booleans()):
            data["items"] = [
                {"product_id": "prod_dust", "total": draw(st.integers(0, total))},
                {"product_id": "prod_plain", "total": total},
            ]
            if draw(st.booleans()):  # a gift card among them, or items claiming too much
                data["items"].append(
                    {"total": draw(st.integers(0, 40_000)), "is_giftcard": draw(st.booleans())}
                )
        if draw(st.booleans()):
            data["cart_id"] = f"cart_{n}"
        if draw(st.booleans()):
            data["gift_card_total"] = draw(st.integers(0, total))
            data["raw"] = {"total": f"{total / 100}"}
        if customer is not None and draw(st.booleans()):
            # Paid partly with dust and store credit: captured from a cart's hold, debited
            # from lots (soonest-expiring first), or short (needs_attention).
            data["dust_total"] = draw(st.integers(0, 60))
            data["store_credit_total"] = draw(st.sampled_from([0, 0, 300, 5_000]))

        def order(p: str, n: int = n, c: Any = customer, t: int = total, d: Any = data) -> Any:
            return placed(p, str(n), c, t, **d)

        events.append(order)
        if draw(st.booleans()):
            events.append(order)  # a redelivery
        if draw(st.booleans()):
            refund = draw(st.integers(1, 40_000))
            to_credit = draw(st.booleans())
            dust_back = draw(st.sampled_from([0, 0, 10, 70]))

            def refunded(
                p: str, n: int = n, amount: int = refund, sc: bool = to_credit, d: int = dust_back
            ) -> dict[str, Any]:
                data = {"id": f"{p}ref_{n}", "order_id": f"{p}ord_{n}", "amount": amount}
                data |= {"currency_code": "usd", "to_store_credit": sc, "dust_amount": d}
                return {
                    "id": f"{p}evt_r{n}",
                    "name": "refund.created",
                    "occurred_at": T0,
                    "data": data,
                }

            events.append(refunded)
        if draw(st.booleans()):
            events.append(
                lambda p, n=n: {
                    "id": f"{p}evt_x{n}",
                    "name": "order.canceled",
                    "occurred_at": T0,
                    "data": {"id": f"{p}ord_{n}"},
                }
            )
    events = draw(st.permutations(events))
    cuts = sorted(draw(st.lists(st.integers(1, len(events)), max_size=4)))
    # 1: new orders go set-based whenever they can; 3: runs of fewer go with the others.
    return events, cuts, draw(st.sampled_from([1, 3]))


@pytest.mark.timeout(1800 if LONG else 300)
@bounded(15, 400, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(w=workloads(), page=st.sampled_from([1, 2, 8]))
def test_any_stream_in_any_batches_gives_the_rows_of_one_event_at_a_time(
    dust: Any, w: tuple[list[Callable[[str], dict[str, Any]]], list[int], int], page: int
) -> None:
    """``page``: how many lots of an account a run reads at first (``journal.LOT_PAGE``;
    PostgreSQL): the debits and clawbacks that go past them read the rest."""
    from dust import inbox
    from dust.inbox import process_batch
    from dust.ledger import journal

    events, cuts, min_bulk = w
    run = next(RUNS)
    a, b = f"h{run}a_", f"h{run}b_"
    for p in (a, b):
        dust.process(
            {
                "id": f"{p}evt_p",
                "name": "product.updated",
                "occurred_at": T0,
                "data": {"id": f"{p}prod_dust", "metadata": {"dust_only": True}},
            }
        )
        dust.grant(f"{p}c1", 40)
        assert dust.reserve(f"{p}c1", f"{p}cart_1", 25).status == "reserved"
        # Lots of three expiries, and store credit, for the orders that charge.
        for days, amount in ((90, 30), (10, 20), (400, 25)):
            dust.grant(
                f"{p}c2", amount, expires_at=datetime(2027, 1, 1, tzinfo=UTC) + timedelta(days)
            )
        dust.grant(f"{p}c2", 4_000, kind=STORE_CREDIT, currency="usd")
        assert dust.reserve(f"{p}c2", f"{p}cart_2", 35).status == "reserved"
        reserved = dust.reserve(f"{p}c2", f"{p}cart_3", 1_000, kind=STORE_CREDIT, currency="usd")
        assert reserved.status == "reserved"
    one_at_a_time = [dust.process(make(a)).status for make in events]
    batched = []
    before, inbox.MIN_BULK_RUN = inbox.MIN_BULK_RUN, min_bulk
    lot_page, journal.LOT_PAGE = journal.LOT_PAGE, page
    try:
        for start, end in itertools.pairwise([0, *cuts, len(events)]):
            batch = [make(b) for make in events[start:end]]
            batched += [r.status for r in process_batch(batch)]
    finally:
        inbox.MIN_BULK_RUN = before
        journal.LOT_PAGE = lot_page

    assert batched == one_at_a_time
    assert_same_rows(b, a)


def test_an_id_already_in_the_inbox_undoes_the_run_and_goes_one_at_a_time(
    dust: Any, bulk_calls: list[tuple[int, bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inbox rows go in last: an id there already (an event recorded ``failed``, or
    the same id on another order) rolls the run's orders and entries back."""
    from dust import inbox

    # All in one transaction, however slow the machine: past its time, the next event
    # would go in a second transaction, set-based again.
    monkeypatch.setattr(inbox, "BATCH_TRANSACTION_SECONDS", 60.0)

    failed = placed("", "f", "cus_f", 2_000)
    inbox.record_failed(failed, RuntimeError("the database was away"))
    reused = placed("", "f", "cus_g", 3_000)
    reused["data"]["id"] = "ord_other"  # same event id, other content
    fresh = placed("", "n", "cus_n", 4_000)

    results = inbox.process_batch([failed, fresh])
    again = inbox.process_batch([reused]) + inbox.process_batch([fresh])

    # place_new wrote both, the inbox refused the failed one's id: rolled back, and both
    # went one at a time (the failed one as a retry). The reused id: the same. The fresh
    # one again: its order has a row, so it went one at a time from the start.
    assert bulk_calls == [(2, True), (1, True)]
    assert [r.status for r in results] == ["processed", "processed"]
    assert [r.status for r in again] == ["conflict", "duplicate"]
    assert dust.event("evt_f").attempts == 2
    assert dust.dust("cus_f") == 20 and dust.dust("cus_n") == 40
    assert dust.dust("cus_g") == 0 and dust.count("dust_event_conflicts") == 1
    with worker_db.session_scope() as session:
        assert session.get(Order, "ord_other") is None


def test_rows_keep_every_character_as_sent(dust: Any) -> None:
    """The set-based path hands PostgreSQL its rows as one JSON document: quotes,
    backslashes, escapes, accents and emoji in the envelope and the ids come back as sent
    (a redelivery's content hash still matches)."""
    from dust.inbox import canonical, process_batch

    odd = 'quote " backslash \\ slash / tab \t newline \n \\u0000 é 😀 \u2028'
    envelope = placed("", 'ü😀"\\', 'cus_ü"\\😀', 12_345, note=odd, items=None)
    envelope["data"]["cart_id"] = "cart_é\\"

    assert [r.status for r in process_batch([envelope, placed("", "2", "cus_2", 1)])] == [
        "processed",
        "processed",
    ]
    assert process_batch([envelope])[0].status == "duplicate"
    row = dust.event(envelope["id"])
    assert row is not None and row.envelope == canonical(
        {**envelope, "occurred_at": envelope["occurred_at"]}
    )
    assert dust.dust('cus_ü"\\😀') == 123
    with worker_db.session_scope() as session:
        order = session.get(Order, 'ord_ü😀"\\')
        assert order is not None and order.cart_id == "cart_é\\"


def test_an_order_written_since_the_check_undoes_the_run(
    dust: Any, bulk_calls: list[tuple[int, bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker commits an event of one of the orders between the checks for their
    rows (the batch's first locks, then the set-based path's) and their INSERT: place_new
    declines, the run is rolled back and goes one at a time (here: a cancel that came
    first, which the checks are made not to see)."""
    from dust.inbox import process_batch
    from dust.ledger import orders

    dust.send("order.canceled", {"id": "ord_2"}, event_id="evt_x2")
    monkeypatch.setattr(
        orders, "lock_existing_orders", lambda session, ids, skip_locked=False: ({}, {})
    )
    monkeypatch.setattr(orders, "orders_with_rows", lambda session, ids: set())
    results = process_batch([placed("", "1", "cus_1", 1_000), placed("", "2", "cus_1", 2_000)])

    assert bulk_calls == [(2, False)]
    assert [r.status for r in results] == ["processed", "processed"]
    assert dust.dust("cus_1") == 10  # the canceled order earned nothing
    with worker_db.session_scope() as session:
        order = session.get(Order, "ord_2")
        assert order is not None and order.canceled and order.no_earn_reason == "canceled"


@pytest.mark.services
def test_postgresql_plans_each_statement_for_the_tables_as_they_are(postgres_url: str) -> None:
    """worker/db.py: a generic plan made while the tables were small (a sequential scan)
    would be kept as they grow; Dust's connections ask for a plan per execution."""
    from sqlalchemy import text

    engine = worker_db.make_engine(postgres_url)
    try:
        with engine.connect() as connection:
            assert connection.scalar(text("SHOW plan_cache_mode")) == "force_custom_plan"
    finally:
        engine.dispose()


def test_a_run_with_a_rejected_event_gives_the_rows_of_one_at_a_time(
    dust: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Orders that charge, refunds and cancels go in one run (``_apply_run``); a refund in
    another currency than its order's is rejected inside it: the run is rolled back, the
    events up to that one go one at a time, the rest in a run again. The same rows and
    outcomes as one at a time, and nothing of the rejected refund."""
    from dust import inbox

    def stream(p: str) -> list[dict[str, Any]]:
        def refund(n: str, order: str, amount: int, currency: str = "usd") -> dict[str, Any]:
            data = {"id": f"{p}ref_{n}", "order_id": f"{p}ord_{order}", "amount": amount}
            data |= {"currency_code": currency, "to_store_credit": True, "dust_amount": 5}
            return {"id": f"{p}evt_r{n}", "name": "refund.created", "occurred_at": T0, "data": data}

        return [
            placed(p, "1", "c1", 5_000, dust_total=30, cart_id=f"{p}cart_1"),
            placed(p, "2", "c1", 7_000, dust_total=20, store_credit_total=100),
            refund("1", "1", 1_000),
            refund("bad", "2", 500, currency="eur"),  # rejected: the order is in usd
            {
                "id": f"{p}evt_x2",
                "name": "order.canceled",
                "occurred_at": T0,
                "data": {"id": f"{p}ord_2"},
            },
            refund("3", "3", 200),  # before its order: waits
            placed(p, "3", "c2", 3_000, dust_total=10),
        ]

    for p in ("a_", "b_"):
        dust.grant(f"{p}c1", 60, expires_at=datetime(2027, 3, 1, tzinfo=UTC))
        dust.grant(f"{p}c1", 40, expires_at=datetime(2027, 1, 1, tzinfo=UTC))
        dust.grant(f"{p}c1", 1_000, kind=STORE_CREDIT, currency="usd")
        dust.grant(f"{p}c2", 10)
        assert dust.reserve(f"{p}c1", f"{p}cart_1", 25).status == "reserved"
    runs: list[int] = []
    real = inbox._apply_run

    def counted(session: Any, run: Any, context: Any) -> Any:
        runs.append(len(run.events))
        return real(session, run, context)

    one_at_a_time = [dust.process(e).status for e in stream("a_")]
    monkeypatch.setattr(inbox, "_apply_run", counted)
    monkeypatch.setattr(inbox, "BATCH_TRANSACTION_SECONDS", 60)  # one transaction
    batched = [r.status for r in inbox.process_batch(stream("b_"))]

    assert one_at_a_time == ["processed"] * 3 + ["rejected"] + ["processed"] * 3
    assert batched == one_at_a_time
    assert runs == [7, 3]  # rolled back at the 4th; the 4 first one at a time, then a run
    assert_same_rows("b_", "a_")
    assert dust.count("dust_refunds") == 4  # two recorded per stream; no rejected one


def test_new_orders_no_earlier_event_touches_go_first_set_based(
    dust: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a mixed batch, the new orders that charge nothing go set-based ahead of the
    events before them (``inbox._apply_first``), unless one of those touches their order,
    their customer or their cart, directly or through the batch's other events (a cancel
    of an order the batch placed is its customer's), or a product event precedes them.
    The same rows and outcomes as one at a time."""
    from dust import inbox

    def stream(p: str) -> list[dict[str, Any]]:
        cancel = {"id": f"{p}evt_x4", "name": "order.canceled", "occurred_at": T0}
        refund = {"id": f"{p}ref_9", "order_id": f"{p}ord_9", "amount": 1_000}
        refund |= {"currency_code": "usd", "to_store_credit": True}
        product = {"id": f"{p}prod_dust", "metadata": {"dust_only": True}}
        return [
            placed(p, "1", "c1", 5_000, dust_total=30),  # charges: in place
            placed(p, "2", "c2", 4_000),  # goes first
            {"id": f"{p}evt_r9", "name": "refund.created", "occurred_at": T0, "data": refund},
            placed(p, "3", "c1", 6_000),  # after c1's charge: in place
            placed(p, "4", "c4", 2_000, dust_total=5),  # charges: in place
            cancel | {"data": {"id": f"{p}ord_4"}},  # c4's, through ord_4
            placed(p, "5", "c4", 3_000),  # after the cancel of c4's order: in place
            placed(p, "6", None, 8_000, cart_id=f"{p}cart_6"),  # a guest's: goes first
            placed(p, "7", "c7", 1_000, cart_id=f"{p}cart_6"),  # the same cart: goes first
            placed(p, "9", "c9", 9_000),  # refunded before: in place (its order has a row)
            {"id": f"{p}evt_p", "name": "product.updated", "occurred_at": T0, "data": product},
            placed(p, "8", "c8", 7_000, items=[{"product_id": f"{p}prod_dust", "total": 7_000}]),
        ]

    for p in ("a_", "b_"):
        dust.grant(f"{p}c1", 100)
        dust.grant(f"{p}c4", 100)
    went_first: list[str] = []
    real = inbox._apply_first

    def spy(session: Any, parsed: Any, locked: Any, context: Any) -> Any:
        done, alone = real(session, parsed, locked, context)
        went_first.extend(parsed[at].event_id for at in sorted(done))
        return done, alone

    one_at_a_time = [dust.process(e).status for e in stream("a_")]
    monkeypatch.setattr(inbox, "_apply_first", spy)
    monkeypatch.setattr(inbox, "BATCH_TRANSACTION_SECONDS", 60)  # one transaction
    batched = [r.status for r in inbox.process_batch(stream("b_"))]

    assert went_first == ["b_evt_2", "b_evt_6", "b_evt_7"]
    assert batched == one_at_a_time == ["processed"] * 12
    assert_same_rows("b_", "a_")
