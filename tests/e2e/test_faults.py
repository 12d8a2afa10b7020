"""The fault harness's short form (bench/faults.py --short) as a test.

About 400 events with duplicates and shuffled orders, published to two events workers
beside a requests worker that answers admin credits and cart holds, while a worker's main
process, a pool child and the requests process are killed with SIGKILL, the harness's own Redis is
killed and restarted, and the workers' database connections are terminated. Every event
must be applied exactly once in effect, every balance must equal the independent model,
and reconciliation must be clean. About a minute.
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


def test_short_fault_run_loses_nothing_and_matches_the_model():
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
        [sys.executable, "bench/faults.py", "--short", "--json", "--admin-url", ADMIN_URL],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
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
    faults = summary["faults"]
    assert faults.get("kill_worker_main", 0) >= 1 and faults.get("kill_pool_child", 0) >= 1
    assert faults.get("redis_restart") == 1 and faults.get("db_connections_terminated") == 1
    # The requests process (the Procfile's requests line) was killed too, and every admin
    # credit and cart hold it answered is there exactly once.
    assert faults.get("kills_of_a_requests_process", 0) >= 1, output
    assert summary["request_mismatches"] == 0 and not summary["request_errors"], output
    assert summary["requests_answered"].get("dust.admin.adjust", 0) > 0, output
