"""Many events per transaction (``dust.tasks.events.handle_batch``, ``dust.inbox.process_batch``):
the same ledger as one at a time, duplicates inside a batch, one bad event never holding
back the others, and every message settled or left for redelivery, never dropped."""

from __future__ import annotations

import random
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from dust.subscribers.base import Outcome

T0 = "2026-11-20T10:00:00Z"


def body(envelope: Any) -> list[Any]:
    """A ``dust.handle_event`` message body as the worker decodes it."""
    return [[envelope], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]


def workload(prefix: str, seed: int) -> list[dict[str, Any]]:
    """Customers, orders (some with refunds and cancels), in a shuffled order, some twice."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for c in range(6):
        customer = f"{prefix}cus_{c}"
        events.append({"id": f"{prefix}c{c}", "name": "customer.created", "data": {"id": customer}})
        for o in range(3):
            order = f"{prefix}ord_{c}_{o}"
            total = 1000 + 379 * c + 113 * o
            events.append(
                {
                    "id": f"{prefix}o{c}_{o}",
                    "name": "order.placed",
                    "occurred_at": T0,
                    "data": {
                        "id": order,
                        "customer_id": customer,
                        "currency_code": "usd",
                        "total": total,
                    },
                }
            )
            if o == 1:
                events.append(
                    {
                        "id": f"{prefix}r{c}_{o}",
                        "name": "refund.created",
                        "occurred_at": T0,
                        "data": {
                            "id": f"{prefix}ref_{c}_{o}",
                            "order_id": order,
                            "amount": total // 3,
                            "currency_code": "usd",
                            "to_store_credit": True,
                        },
                    }
                )
            if o == 2 and c % 2:
                events.append(
                    {
                        "id": f"{prefix}x{c}_{o}",
                        "name": "order.canceled",
                        "occurred_at": T0,
                        "data": {"id": order},
                    }
                )
    rng.shuffle(events)
    events += rng.sample(events, 5)  # redelivered duplicates
    return events


def ledger_of(dust: Any, prefix: str) -> dict[str, Any]:
    return {c: dust.snapshot(f"{prefix}cus_{c}") for c in range(6)}


def test_a_batch_gives_the_ledger_of_one_event_at_a_time(dust: Any) -> None:
    from dust.tasks.events import handle_batch

    one_by_one = workload("a_", seed=7)
    for envelope in one_by_one:
        dust.process(envelope)
    batched = workload("b_", seed=7)
    settled: list[str | None] = []
    for start in range(0, len(batched), 9):
        settled += handle_batch([body(e) for e in batched[start : start + 9]])

    assert None not in settled and len(settled) == len(batched)
    assert ledger_of(dust, "b_") == ledger_of(dust, "a_")
    assert any(snapshot["dust"] for snapshot in ledger_of(dust, "a_").values())
    dust.check_invariants()


def test_a_batch_past_its_time_budget_commits_in_several_transactions(
    dust: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dust import inbox
    from dust.subscribers import BULK_SUBSCRIBERS

    for envelope in workload("a_", seed=11):
        dust.process(envelope)
    # One step per transaction, after the events that go first (set-based, ahead of the
    # others): an event, a run of one bulk subscriber's events (order.placed,
    # customer.created) applied set-based, or a run of events applied one after another
    # with their rows locked together (MAX_RUN of them).
    monkeypatch.setattr(inbox, "BATCH_TRANSACTION_SECONDS", 0)
    monkeypatch.setattr(inbox, "MAX_RUN", 3)
    steps: list[list[str]] = []
    went_first: list[list[str]] = []
    real_apply_some, real_apply_first = inbox._apply_some, inbox._apply_first

    def apply_first(session: Any, parsed: Any, locked: Any, context: Any) -> Any:
        done, alone = real_apply_first(session, parsed, locked, context)
        went_first.append([parsed[at].name for at in sorted(done)])
        return done, alone

    def counted(parsed: Any, context: Any, wait: bool = True) -> Any:
        done = real_apply_some(parsed, context, wait)
        first = len(went_first[-1]) if went_first else 0
        steps.append([parsed[at].name for at in sorted(done)][first:])
        return done

    monkeypatch.setattr(inbox, "_apply_some", counted)
    monkeypatch.setattr(inbox, "_apply_first", apply_first)
    batched = workload("b_", seed=11)
    results = inbox.process_batch(batched)

    assert [r.event_id for r in results] == [e["id"] for e in batched]
    assert sum(map(len, went_first)) > 0  # new orders and customers of no earlier event
    assert all(names and set(names) <= set(BULK_SUBSCRIBERS) for names in went_first if names)
    assert len(steps) >= (len(batched) - sum(map(len, went_first))) / 3
    assert all(
        len(names) <= 1
        or (len(set(names)) == 1 and names[0] in BULK_SUBSCRIBERS)
        or len(names) <= 3
        for names in steps
    )
    assert ledger_of(dust, "b_") == ledger_of(dust, "a_")


def test_duplicates_inside_one_batch_and_across_batches_apply_once(dust: Any) -> None:
    from dust.inbox import process_batch

    order = {
        "id": "evt_o",
        "name": "order.placed",
        "occurred_at": T0,
        "data": {"id": "ord_1", "customer_id": "cus_1", "currency_code": "usd", "total": 5000},
    }
    other = {**order, "data": {**order["data"], "total": 9000}}  # same id, other content
    first = process_batch([order, order, other])
    second = process_batch([order])

    assert [r.status for r in first] == ["processed", "duplicate", "conflict"]
    assert [r.status for r in second] == ["duplicate"]
    assert dust.dust("cus_1") == 50
    assert dust.event("evt_o").attempts == 1
    assert dust.count("dust_event_conflicts") == 1


@pytest.mark.parametrize("budget", [0.25, 0], ids=["one-transaction", "one-per-event"])
def test_a_bug_in_one_event_holds_back_none_of_the_others(
    dust: Any, monkeypatch: pytest.MonkeyPatch, budget: float
) -> None:
    # budget 0: the events before the bug have committed when it strikes; applied again
    # one by one, they are duplicates, applied once.
    from dust import inbox

    monkeypatch.setattr(inbox, "BATCH_TRANSACTION_SECONDS", budget)
    from dust.ledger.accounts import ensure_account, lock_accounts
    from dust.ledger.journal import Ref, credit
    from dust.subscribers import SUBSCRIBERS
    from dust.tasks.events import handle_batch

    def credits_then_breaks(session: Any, envelope: Any, context: Any) -> Outcome:
        account_id = ensure_account(session, "cus_broken", "dust")
        credit(
            session, lock_accounts(session, [account_id])[account_id], 500, Ref("earn", "x", "x")
        )
        raise RuntimeError("a bug")

    monkeypatch.setitem(SUBSCRIBERS, "test.broken", credits_then_breaks)
    good = [
        {"id": f"evt_{i}", "name": "customer.created", "data": {"id": f"cus_{i}"}} for i in range(4)
    ]
    broken = {"id": "evt_broken", "name": "test.broken", "data": {"id": "x"}}

    settled = handle_batch([body(good[0]), body(good[1]), body(broken), body(good[2])])

    assert settled == ["processed", "processed", "failed", "processed"]  # as first settled
    assert [dust.event(e["id"]).status for e in good[:3]] == ["processed"] * 3
    assert [dust.event(e["id"]).attempts for e in good[:3]] == [1, 1, 1]
    assert dust.count("dust_accounts") == 3  # cus_0..cus_2, each opened once
    failed = dust.event("evt_broken")
    assert failed.status == "failed" and "RuntimeError: a bug" in failed.reason
    assert dust.dust("cus_broken") == 0  # nothing of the broken event stayed
    assert dust.count("dust_entries") == 0


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ([["one", "two"], {}, {}], "exactly one argument"),
        ([[], {"envelope": {"id": "e"}}, {}], "exactly one argument"),
        ("not a body", "exactly one argument"),
    ],
)
def test_a_message_of_the_wrong_shape_is_recorded_rejected(dust: Any, raw: Any, why: str) -> None:
    from dust.tasks.events import handle_batch
    from dust.worker.db import session_scope

    assert handle_batch([raw]) == ["rejected"]
    with session_scope() as session:
        from sqlalchemy import select

        from dust.models import Event

        rows = session.scalars(select(Event)).all()
        assert [(row.status, why in (row.reason or "")) for row in rows] == [("rejected", True)]
        assert rows[0].event_id.startswith("invalid:")


def test_a_batch_that_cannot_commit_is_retried_one_event_at_a_time(
    dust: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dust import inbox
    from dust.tasks import events

    lost = OperationalError("COMMIT", {}, Exception("server closed the connection"))

    def no_batches(raws: Any, **_: Any) -> Any:
        raise lost

    real_process = inbox.process

    def flaky(raw: Any, **kwargs: Any) -> Any:
        if raw["id"] == "evt_flaky":
            raise lost
        return real_process(raw, **kwargs)

    published: list[dict[str, Any]] = []
    monkeypatch.setattr(inbox, "process_batch", no_batches)
    monkeypatch.setattr(inbox, "process", flaky)
    monkeypatch.setattr(
        events.handle_event, "apply_async", lambda **options: published.append(options)
    )
    ok = {"id": "evt_ok", "name": "customer.created", "data": {"id": "cus_ok"}}
    flaky_event = {"id": "evt_flaky", "name": "customer.created", "data": {"id": "cus_f"}}

    assert events.handle_batch([body(ok), body(flaky_event)]) == ["processed", "retry"]
    assert dust.event("evt_ok").status == "processed"
    assert dust.event("evt_flaky") is None
    # handed to a later retry exactly as the task's own retry does: a new message
    assert published == [{"args": [flaky_event], "countdown": 2, "retries": 1}]

    def broker_down(**_: Any) -> None:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(events.handle_event, "apply_async", broker_down)
    # neither applied nor handed on: left for redelivery, never acknowledged
    assert events.handle_batch([body(flaky_event)]) == [None]


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.services)], indirect=True
)
def test_a_batch_applies_at_once_what_another_transaction_holds_no_row_of(
    dust: Any, backend: str
) -> None:
    """A batch's first transaction waits for no row another transaction holds: the events
    that touch such a row (an account, an order), and those joined to them, go in its next
    transaction, which waits; the others commit at once. The same ledger as one at a time."""
    import threading
    import time

    from sqlalchemy import text

    from dust.inbox import process_batch
    from dust.worker import db as worker_db

    def placed(p: str, n: str, customer: str, **extra: Any) -> dict[str, Any]:
        data = {"id": f"{p}ord_{n}", "customer_id": f"{p}{customer}", "currency_code": "usd"}
        data |= {"total": 5_000, **extra}
        return {"id": f"{p}evt_{n}", "name": "order.placed", "occurred_at": T0, "data": data}

    def events(p: str) -> list[dict[str, Any]]:
        cancel = {"id": f"{p}evt_x", "name": "order.canceled", "occurred_at": T0}
        return [
            placed(p, "1", "c1", dust_total=10),  # c1's account is held: later
            placed(p, "2", "c2", dust_total=10),  # at once
            cancel | {"data": {"id": f"{p}ord_0"}},  # c3's order, whose row is held: later
            placed(p, "3", "c3"),  # c3's, after that cancel: later
            placed(p, "4", "c4"),  # at once
            placed(p, "5", "c1"),  # c1's: later
        ]

    for p in ("a_", "b_"):
        for c in ("c1", "c2", "c3"):
            dust.grant(f"{p}{c}", 100)
        assert dust.process(placed(p, "0", "c3", dust_total=20)).status == "processed"
    one_at_a_time = [dust.process(e).status for e in events("a_")]

    commits: list[list[str]] = []
    engine = worker_db.get_engine()
    with engine.connect() as other:
        other.execute(
            text("SELECT 1 FROM dust_accounts WHERE customer_id = 'b_c1' FOR UPDATE")
        ).all()
        other.execute(text("SELECT 1 FROM dust_orders WHERE order_id = 'b_ord_0' FOR UPDATE")).all()
        results: list[Any] = []

        def run() -> None:
            results.extend(
                process_batch(
                    events("b_"), on_commit=lambda d: commits.append([r.event_id for r in d])
                )
            )

        batch = threading.Thread(target=run)
        batch.start()
        deadline = time.monotonic() + 10
        while not commits and time.monotonic() < deadline:
            time.sleep(0.01)
        assert commits == [["b_evt_2", "b_evt_4"]]  # committed while the rows are held
        other.rollback()
    batch.join(timeout=30)

    assert commits == [["b_evt_2", "b_evt_4"], ["b_evt_1", "b_evt_x", "b_evt_3", "b_evt_5"]]
    assert [r.status for r in results] == one_at_a_time == ["processed"] * 6
    for c in ("c1", "c2", "c3", "c4"):
        assert dust.snapshot(f"b_{c}") == dust.snapshot(f"a_{c}")
    dust.check_invariants()
