"""The fault harness's short form (bench/faults.py --short) as a test.

About 400 events with duplicates and shuffled orders, published to two events workers
beside a requests worker that answers admin credits and cart holds, while a worker's main
process, a pool child and the requests process are killed with SIGKILL, the harness's own Redis is
killed and restarted, and the workers' database connections are terminated. Every event
must be applied exactly once in effect, every balance must equal the independent model,
and reconciliation must be clean. About a minute; the same with the mixed workload
(``--mix``: balances, orders charging dust, new customers) published at full rate, another.

Then four events workers (one pool process each) on one mixed stream with a third of its
orders on one customer, each order's events shuffled: every event once, the model's
balances whatever worker took what, nothing left waiting. About a minute. A batch locks
the orders and accounts that exist of all its events first, in one order, so batches no
longer wait on each other's accounts in opposite orders; PostgreSQL may still detect a
deadlock on rows created meanwhile (a new order, or the inbox row of an envelope published
twice and taken by two workers at once). It breaks each within ``deadlock_timeout`` by
failing one transaction, which is retried: the count is in the summary (BENCHMARKS.md,
"Several workers").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

from .support import ROOT

pytestmark = [pytest.mark.services, pytest.mark.e2e]

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def harness(*arguments: str) -> tuple[dict, str]:
    """bench/faults.py with ``arguments``: its JSON summary and its output."""
    problems = []
    if not shutil.which("redis-server"):
        problems.append("redis-server not on PATH")
    try:
        engine = create_engine(ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        problems.append(f"PostgreSQL: {type(exc).__name__}")
    if problems:
        if os.environ.get("CI") == "true":
            pytest.fail("; ".join(problems), pytrace=False)
        pytest.skip("; ".join(problems))
    done = subprocess.run(
        [sys.executable, "bench/faults.py", *arguments, "--json", "--admin-url", ADMIN_URL],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["lost"] == 0, output
    assert summary["duplicated"] == 0, output
    assert summary["mismatches"] == 0, output
    assert summary["negative_available_seen"] == 0, output
    assert summary["reconcile_clean"], output
    assert summary["statuses"] == {"processed": summary["events"]}, output
    return summary, output


@pytest.mark.parametrize("workload", ["plain", "mixed at full rate"])
def test_short_fault_run_loses_nothing_and_matches_the_model(workload: str) -> None:
    mixed = ["--mix", "--rate", "200"] if workload != "plain" else []
    summary, output = harness("--short", *mixed)
    faults = summary["faults"]
    assert faults.get("kill_worker_main", 0) >= 1 and faults.get("kill_pool_child", 0) >= 1
    assert faults.get("redis_restart") == 1 and faults.get("db_connections_terminated") == 1
    # The requests process (the Procfile's requests line) was killed too, and every admin
    # credit and cart hold it answered is there exactly once.
    assert faults.get("kills_of_a_requests_process", 0) >= 1, output
    assert summary["request_mismatches"] == 0 and not summary["request_errors"], output
    assert summary["requests_answered"].get("dust.admin.adjust", 0) > 0, output
    if mixed:
        kinds = summary["kinds"]
        assert kinds["order.placed"] and kinds["refund.created"] and kinds["order.canceled"]
        assert kinds["customer.created"] and summary["events_before_the_faults"], output


def test_four_workers_on_one_hot_stream_apply_each_event_once() -> None:
    summary, output = harness(
        "--mix", "--hot-share", "0.3", "--events", "800", "--rate", "1000",
        "--workers", "4", "--concurrency", "1", "--requests-workers", "0",
        "--kills", "0", "--redis-restarts", "0", "--db-interruptions", "0",
        "--timeout", "300",
    )  # fmt: skip
    # Deadlocks broken by PostgreSQL were retried inside the delivery: no event needed a
    # second delivery, none was recorded failed.
    assert summary["max_attempts"] == 1, output
    assert summary["deadlocks"] is not None, output
