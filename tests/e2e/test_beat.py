"""A real ``celery beat`` and a real worker, started from the Procfile, run the jobs.

The Procfile's ``worker:`` and ``beat:`` lines are run as they are (plus a node name and a
pool size for the worker), with schedules of a few seconds from the environment, on a
PostgreSQL database of their own (``dust_beat``) and Redis database 13 (flushed first).
Each beat runs in a directory of its own, so each keeps its own ``.dust/celerybeat-schedule``
— exactly the mistake of two schedulers on two machines.

1. One beat: every job runs on its schedule, each run recorded; a due lot and a due hold
   expire, reconciliations are stored and clean.
2. Two beats: every task either claims its (job, period) or is skipped; one run per period.
3. A run split over many tasks (no time budget, one account per chunk) in the real worker.

PostgreSQL or Redis unreachable: skipped, except under ``CI=true`` where it fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from dust.worker import procfile

pytestmark = [pytest.mark.services, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DATABASE_URL = os.environ.get(
    "DUST_BEAT_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/dust_beat"
)
BROKER_URL = os.environ.get("DUST_BEAT_BROKER_URL", "redis://127.0.0.1:6379/13")
#: Seconds between runs of each job in this test.
SCHEDULE = {"expire_holds": 2, "expire_lots": 3, "reconcile": 4}
JOBS = tuple(SCHEDULE)


def env() -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if not k.startswith("DUST_")}
    values.update(
        DUST_DATABASE_URL=DATABASE_URL,
        DUST_BROKER_URL=BROKER_URL,
        DUST_RESULT_BACKEND=BROKER_URL,
        DUST_VISIBILITY_TIMEOUT_SECONDS="30",
        PYTHONUNBUFFERED="1",
        **{f"DUST_SCHEDULE_{job.upper()}_SECONDS": str(s) for job, s in SCHEDULE.items()},
    )
    return values


class Process(procfile.Process):
    """A process of the Procfile, started at once; ``wait_for`` a pattern in its log."""

    def __init__(self, name: str, command: list[str], cwd: Path, log: Path) -> None:
        super().__init__(name, command, log, env=env(), cwd=cwd)
        self.start()

    def text(self) -> str:
        return self.log_since(self.log_offset)

    def wait_for(self, pattern: str, timeout: float = 40) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text()):
            if not self.running():
                pytest.fail(f"{self.name} exited:\n{self.text()[-5000:]}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name}: no {pattern!r}:\n{self.text()[-5000:]}", pytrace=False)
            time.sleep(0.1)

    def stop(self, timeout: float = 20) -> None:
        super().stop(timeout)


# -- services ------------------------------------------------------------------------------


def _unavailable() -> str | None:
    return procfile.unreachable(DATABASE_URL, BROKER_URL)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    problem = _unavailable()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"beat e2e services unavailable: {problem}; CI=true needs them")
        pytest.skip(f"beat e2e services unavailable: {problem}")
    redis.Redis.from_url(BROKER_URL).flushdb()
    target = make_url(DATABASE_URL)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        if not connection.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": target.database}
        ):
            connection.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()
    engine = create_engine(DATABASE_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    done = subprocess.run(
        [str(BIN / "dust"), "db", "upgrade"], cwd=ROOT, env=env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def worker(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    logs = tmp_path_factory.mktemp("beat-e2e")
    command = [*procfile.command("worker"), "-n", "beat-e2e@%h", "--concurrency", "2"]
    process = Process("worker", command, ROOT, logs / "worker.log")
    try:
        process.wait_for(r"beat-e2e@\S+ ready\.")
        yield process
    finally:
        process.stop()


def start_beat(name: str, tmp_path: Path) -> Process:
    home = tmp_path / name  # its own working directory: its own .dust/celerybeat-schedule
    home.mkdir()
    process = Process(name, procfile.command("beat"), home, tmp_path / f"{name}.log")
    process.wait_for(r"beat: Starting")
    return process


def rows(engine: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(r) for r in connection.execute(text(sql), params).mappings()]


def wait_idle(engine: Engine, timeout: float = 30) -> None:
    """Until no job message is queued and no run is still running."""
    r = redis.Redis.from_url(BROKER_URL)
    deadline = time.monotonic() + timeout
    while True:
        running = rows(engine, "SELECT id FROM dust_job_runs WHERE status = 'running'")
        if not running and not r.llen("dust.jobs") and not r.hlen("unacked"):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"jobs not finished after {timeout}s: running {running}", pytrace=False)
        time.sleep(0.2)


def seed(engine: Engine) -> None:
    """A customer with a lot that expired yesterday, a live lot, and a hold due in 1 s."""
    from dust.ledger import holds, journal
    from dust.ledger.accounts import ensure_account, lock_accounts
    from dust.worker.db import make_engine, session_scope

    ledger_engine = make_engine(DATABASE_URL)
    try:
        with session_scope(ledger_engine) as session:
            account_id = ensure_account(session, "cus_beat", "dust")
            account = lock_accounts(session, [account_id])[account_id]
            past = datetime.now(UTC) - timedelta(days=1)
            journal.credit(
                session, account, 70, journal.Ref("earn", "order", "o1"), expires_at=past
            )
            journal.credit(session, account, 30, journal.Ref("earn", "order", "o2"))
            holds.reserve(session, account, "cart_beat", 20, ttl_seconds=1)
    finally:
        ledger_engine.dispose()


# -- the tests -----------------------------------------------------------------------------


def test_one_beat_and_a_worker_run_every_job_on_schedule(
    engine: Engine, worker: Process, tmp_path: Path
) -> None:
    seed(engine)
    beat = start_beat("beat-1", tmp_path)
    try:
        time.sleep(11)
    finally:
        beat.stop()
    wait_idle(engine)
    beat_log = beat.text()

    runs = rows(engine, "SELECT * FROM dust_job_runs ORDER BY id")
    by_job = Counter(r["job"] for r in runs)
    for job in JOBS:
        assert by_job[job] >= 2, (by_job, beat_log[-3000:], worker.text()[-5000:])
    assert all(r["status"] == "succeeded" and r["finished_at"] for r in runs), runs
    # periods follow the schedules: "…T10:05:42" for a 2 s schedule, one row each
    for r in runs:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", r["period"]), r
        assert int(r["period"][-2:]) % SCHEDULE[r["job"]] == 0, r

    # the due lot and the due hold expired; the rest is intact
    account = rows(
        engine, "SELECT balance, held FROM dust_accounts WHERE customer_id = 'cus_beat'"
    )[0]
    assert account == {"balance": 30, "held": 0}
    (entry,) = rows(engine, "SELECT * FROM dust_entries WHERE reason = 'expiry'")
    assert entry["amount"] == 70 and entry["reference_id"].startswith("job_run:")
    assert rows(engine, "SELECT status FROM dust_holds") == [{"status": "expired"}]

    # every reconciliation was stored, clean, and tied to its run
    recs = rows(engine, "SELECT * FROM dust_reconciliations ORDER BY id")
    assert len(recs) == by_job["reconcile"]
    assert all(r["ok"] and r["finished_at"] and r["actor"] == "scheduler" for r in recs)


def test_two_beats_still_run_each_job_once_per_period(
    engine: Engine, worker: Process, tmp_path: Path
) -> None:
    first_id = rows(engine, "SELECT COALESCE(MAX(id), 0) AS m FROM dust_job_runs")[0]["m"]
    log_start = len(worker.text())
    beats = [start_beat("beat-a", tmp_path)]
    time.sleep(0.9)  # out of phase, as two machines would be
    beats.append(start_beat("beat-b", tmp_path))
    try:
        time.sleep(13)
    finally:
        for beat in beats:
            beat.stop()
    wait_idle(engine)

    sent = Counter()
    for beat in beats:
        for job in re.findall(r"Sending due task (\w+) \(dust\.\w+\)", beat.text()):
            sent[(beat.name, job)] += 1
    runs = rows(engine, "SELECT * FROM dust_job_runs WHERE id > :f ORDER BY id", f=first_id)
    periods = Counter((r["job"], r["period"]) for r in runs)
    log = worker.text()[log_start:]
    skipped = Counter(re.findall(r"(\w+) for period (\S+) already claimed", log))
    claimed = Counter(
        (job, period) for job, _, period in re.findall(r"(\w+) run (\d+) claimed period (\S+)", log)
    )
    context = f"sent {dict(sent)}\nruns {dict(periods)}\nskipped {dict(skipped)}\n{log[-4000:]}"

    for job in JOBS:
        # both beats really sent the job, several times
        assert sent[("beat-a", job)] >= 2 and sent[("beat-b", job)] >= 2, context
        job_sent = sent[("beat-a", job)] + sent[("beat-b", job)]
        job_runs = sum(n for (j, _), n in periods.items() if j == job)
        job_skipped = sum(n for (j, _), n in skipped.items() if j == job)
        # every task either ran its period or found it claimed: nothing ran twice
        assert job_runs + job_skipped == job_sent, context
        assert job_skipped >= 1, context
        # the number of runs is what one scheduler would have done: each beat's sends are
        # periods of their own, and the two overlap except at the edges (one beat started
        # 0.9 s later and stops later). Counted from the beats' own logs, not from the wall
        # clock, which a loaded machine stretches.
        most = max(sent[("beat-a", job)], sent[("beat-b", job)])
        assert job_runs <= most + 2, context
    assert all(n == 1 for n in periods.values()), context
    assert set(claimed) == set(periods), context
    assert set(skipped) <= set(periods), context
    assert all(r["status"] == "succeeded" for r in runs), runs


def test_a_run_split_over_many_tasks_finishes_in_the_real_worker(
    engine: Engine, worker: Process
) -> None:
    from celery import Celery

    for n in range(6):
        rows(
            engine,
            "INSERT INTO dust_accounts (customer_id, kind, balance, held, created_at)"
            " VALUES (:c, 'dust', 0, 0, now()) RETURNING id",
            c=f"cus_split_{n}",
        )
    accounts = rows(engine, "SELECT count(*) AS n FROM dust_accounts")[0]["n"]
    last = rows(engine, "SELECT COALESCE(MAX(id), 0) AS m FROM dust_job_runs")[0]["m"]
    # start in a reconcile period no scheduled run has claimed (the beats are stopped)
    time.sleep(SCHEDULE["reconcile"] - time.time() % SCHEDULE["reconcile"] + 0.1)
    client = Celery("e2e-beat-client", broker=BROKER_URL)
    client.conf.update(task_serializer="json", accept_content=["json"])
    try:
        # no time budget and one account per chunk: every chunk is a task of its own
        client.send_task("dust.reconcile", kwargs={"chunk_size": 1, "budget": 0}, queue="dust.jobs")
    finally:
        client.close()
    wait_idle(engine)
    deadline = time.monotonic() + 30
    while not rows(engine, "SELECT * FROM dust_job_runs WHERE id > :m", m=last):
        assert time.monotonic() < deadline, worker.text()[-4000:]
        time.sleep(0.2)
    wait_idle(engine)
    (run,) = rows(engine, "SELECT * FROM dust_job_runs WHERE id > :m", m=last)
    counts = json.loads(run["counts"])
    assert run["status"] == "succeeded", run
    # one task per account, and one for the checks that are not per account
    assert counts["tasks"] == accounts + 1 and counts["accounts"] == accounts, counts
    assert counts["ok"] is True
    log = worker.text()
    assert log.count(f"reconcile run {run['id']} continues in a new task") == accounts
