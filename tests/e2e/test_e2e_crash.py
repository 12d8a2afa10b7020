"""A worker killed with SIGKILL mid-stream: every event still applied exactly once.

Two ways to die: a pool child killed while running a task (the parent sees the worker
lost and, with ``task_reject_on_worker_lost``, requeues the message at once), and a whole
worker (parent and pool) killed like a crashed machine (its delivered, unacknowledged
messages come back after ``DUST_VISIBILITY_TIMEOUT_SECONDS``, set to 10 s here).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from .support import VISIBILITY_TIMEOUT, wait_queue_empty

pytestmark = [pytest.mark.services, pytest.mark.e2e]

CUSTOMERS = 300
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

    # 1. A pool child of one worker, most likely in the middle of a task.
    children = survivor.pool_children()
    assert children, "no pool child found"
    os.kill(children[0], signal.SIGKILL)
    # 2. The whole other worker, parent and pool, with its prefetched messages.
    victim.kill_hard()
    done_at_kill = dust.scalar(count_sql, p=prefix)
    assert done_at_kill < len(ids), "the stream finished before the kill; make it longer"

    time.sleep(1)
    victim.start()
    victim.wait_ready()
    # Messages the dead worker held come back after the visibility timeout (plus sweeps).
    rows = dust.wait_events(ids, timeout=VISIBILITY_TIMEOUT * 4 + 30)
    wait_queue_empty(timeout=VISIBILITY_TIMEOUT * 3)

    assert {r["status"] for r in rows.values()} == {"processed"}
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
