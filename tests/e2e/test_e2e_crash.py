"""A worker killed with SIGKILL mid-stream: every event still applied exactly once.

Two ways to die: a pool child killed while running a task (the parent sees the worker
lost and, with ``task_reject_on_worker_lost``, requeues the message at once), and a whole
worker (parent and pool) killed like a crashed machine (its delivered, unacknowledged
messages come back after ``DUST_VISIBILITY_TIMEOUT_SECONDS``, set to 10 s here).

The workers use Dust's Redis transport (``worker/redis_transport.py``): one Lua script
pops a message and records it as unacknowledged in the same atomic step, so stock
kombu's window between BRPOP and the ``unacked`` record (celery/kombu#305,
celery/celery#7950), where a killed main process lost the message, no longer exists.
A kill at exactly that instant is ``tests/e2e/test_redis_transport.py``'s test.

This test kills the whole worker at a chosen instant all the same: event transactions
are held at their first statement by a table lock until the broker's counts stop moving.
Not to dodge a lost message any more, but so that the kill is meaningful in every run:
the dead worker holds unacknowledged messages, some of them mid-transaction, and tasks
it received and never finished. After a restart it checks that every event is
processed, that every one of those tasks is redelivered and succeeds, that each order
earned exactly once (one earn entry, the expected balances, the journal agreeing with
the cached balances), and that the surviving worker noticed its pool child's death.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from sqlalchemy import text

from .support import VISIBILITY_TIMEOUT, broker_state, wait_queue_empty

pytestmark = [pytest.mark.services, pytest.mark.e2e]


def task_ids(log: str, what: str) -> set[str]:
    """Ids of the dust.handle_event messages the log says were ``received`` /
    ``succeeded``: one at a time (Celery's lines) or in a batch (runtime/batching.py)."""
    ids = set(re.findall(r"Task dust\.handle_event\[([0-9a-f-]+)\] " + what, log))
    batches = dict(re.findall(r"events batch (\w+): \d+ received ([0-9a-f -]+)", log))
    if what == "received":
        ids.update(i for listed in batches.values() for i in listed.split())
    else:
        for batch in re.findall(r"events batch (\w+): \d+ acknowledged, 0 requeued", log):
            ids.update(batches.get(batch, "").split())
    return ids


def wait_broker_still(seconds: float, timeout: float) -> dict[str, int]:
    """Until the queue lengths and the unacked count have not changed for ``seconds``."""
    deadline = time.monotonic() + timeout
    last, since = broker_state(), time.monotonic()
    while time.monotonic() - since < seconds:
        assert time.monotonic() < deadline, f"broker never still: {last}"
        time.sleep(0.05)
        now = broker_state()
        if now != last:
            last, since = now, time.monotonic()
    return last


CUSTOMERS = 200
ORDERS_PER_CUSTOMER = 3


def test_sigkill_mid_stream_applies_every_event_exactly_once(dust, workers, uid):
    expected: dict[str, int] = {}
    envelopes = []
    for c in range(CUSTOMERS):
        customer = f"cus_{uid}_{c}"
        envelopes.append(
            {"id": f"evt_{uid}_c{c}", "name": "customer.created", "data": {"id": customer}}
        )
        expected[customer] = 0
        for o in range(ORDERS_PER_CUSTOMER):
            total = 1000 + 137 * c + 71 * o
            envelopes.append(
                {
                    "id": f"evt_{uid}_o{c}_{o}",
                    "name": "order.placed",
                    "occurred_at": "2026-11-20T10:00:00Z",
                    "data": {
                        "id": f"order_{uid}_{c}_{o}",
                        "customer_id": customer,
                        "currency_code": "usd",
                        "total": total,
                    },
                }
            )
            expected[customer] += total // 100
    ids = [e["id"] for e in envelopes]
    count_sql = "SELECT COUNT(*) FROM dust_events WHERE event_id LIKE :p"
    prefix = f"evt_{uid}_%"

    survivor, victim = workers.workers
    dust.publish(*envelopes)
    deadline = time.monotonic() + 30
    while dust.scalar(count_sql, p=prefix) < len(ids) // 10:
        assert time.monotonic() < deadline, "the stream never started"
        time.sleep(0.01)

    # 1. A pool child of one worker, most likely in the middle of a task: its parent sees
    #    the worker lost and requeues the message (task_reject_on_worker_lost).
    children = survivor.pool_children()
    assert children, "no pool child found"
    os.kill(children[0], signal.SIGKILL)

    # 2. The whole other worker, parent and pool, holding delivered, unacknowledged
    #    messages (two of them in the middle of a transaction). Every event transaction
    #    is held at its first statement by a table lock until the broker's counts stop
    #    moving, and only for a moment (the soft time limit is 5 s), so the kill lands
    #    while the worker is known to hold messages (see the module docstring).
    with dust.engine.connect() as blocker:
        blocker.execute(text("LOCK TABLE dust_events IN EXCLUSIVE MODE"))
        held = wait_broker_still(seconds=0.6, timeout=3)
        victim.kill_hard()
        blocker.rollback()
    done_at_kill = dust.scalar(count_sql, p=prefix)
    # The tasks the dead worker had received and not finished: they must come back.
    first_life = victim.log_path.read_text()
    orphans = task_ids(first_life, "received") - task_ids(first_life, "succeeded")
    assert orphans, "the killed worker held no message"
    assert done_at_kill < len(ids), "the stream finished before the kill; make it longer"
    assert held["unacked"] > 0, held

    time.sleep(1)
    victim.start()
    victim.wait_ready()
    # Messages the dead worker held come back after the visibility timeout (plus sweeps).
    rows = dust.wait_events(ids, timeout=VISIBILITY_TIMEOUT * 3 + 60)
    wait_queue_empty(timeout=VISIBILITY_TIMEOUT * 3)

    assert {r["status"] for r in rows.values()} == {"processed"}
    handled = task_ids(survivor.log_path.read_text() + victim.log_path.read_text(), "succeeded")
    assert orphans <= handled, f"not redelivered: {orphans - handled}"
    # Exactly once: one earn entry per order, balances as computed, journal == cache.
    earns = dust.rows(
        "SELECT reference_id, COUNT(*) AS n FROM dust_entries"
        " WHERE reference_id LIKE :p AND reason = 'earn' GROUP BY reference_id",
        p=f"order_{uid}_%",
    )
    assert len(earns) == CUSTOMERS * ORDERS_PER_CUSTOMER
    assert {e["n"] for e in earns} == {1}
    balances = {
        r["customer_id"]: r["balance"]
        for r in dust.rows(
            "SELECT customer_id, balance FROM dust_accounts"
            " WHERE customer_id LIKE :p AND kind = 'dust'",
            p=f"cus_{uid}_%",
        )
    }
    assert balances == expected
    assert dust.journal_disagreements() == []
    assert "SIGKILL" in survivor.log(last_lines=100_000), "the pool child's death went unnoticed"
