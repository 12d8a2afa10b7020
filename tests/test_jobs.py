"""Scheduled jobs: periods, the once-per-period claim, runs split over tasks, failures,
schedules from the environment, and ``dust expire`` / ``dust jobs``.

A real beat and a real worker are in ``tests/e2e/test_beat.py``; here the task body
(``dust.tasks.jobs.run_step``) runs in-process with a stand-in for the Celery task, so each
branch (skipped, continued, retried, failed) is driven deliberately.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import Dust
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from dust.models import JobRun
from dust.models.base import utcnow
from dust.tasks import jobs, runs
from dust.worker.beat import JOBS_QUEUE, build_schedule
from dust.worker.db import session_scope
from dust.worker.settings import ConfigError, Settings, get_settings

ROOT = Path(__file__).resolve().parents[1]
DUST_BIN = Path(sys.executable).parent / "dust"


class FakeTask:
    """What ``run_step`` uses of a bound Celery task."""

    soft_time_limit = 30

    def __init__(self, task_id: str = "task-1", retries: int = 0) -> None:
        self.request = SimpleNamespace(id=task_id, retries=retries)
        self.sent: list[dict[str, Any]] = []
        self.retried: dict[str, Any] | None = None

    def apply_async(self, kwargs: dict[str, Any] | None = None, **options: Any) -> None:
        assert options.get("queue") == JOBS_QUEUE
        self.sent.append(kwargs or {})

    def retry(self, kwargs: dict[str, Any] | None = None, **options: Any) -> Exception:
        self.retried = kwargs
        return RetryRequested()


class RetryRequested(Exception):
    pass


def job_runs() -> list[JobRun]:
    with session_scope() as session:
        return list(session.scalars(select(JobRun).order_by(JobRun.id)))


def test_periods_are_the_start_instant_floored_to_the_schedule() -> None:
    t = datetime(2026, 11, 21, 10, 5, 42, 123456, tzinfo=UTC)
    assert runs.period_for(t, 60) == "2026-11-21T10:05"
    assert runs.period_for(t, 300) == "2026-11-21T10:05"
    assert runs.period_for(t, 7200) == "2026-11-21T10:00"
    assert runs.period_for(t, 86400) == "2026-11-21"
    assert runs.period_for(t, 5) == "2026-11-21T10:05:40"
    assert runs.period_for(t + timedelta(seconds=17), 60) == "2026-11-21T10:05"
    assert runs.period_for(t + timedelta(seconds=18), 60) == "2026-11-21T10:06"
    assert runs.manual_period(t) == "cli:2026-11-21T10:05:42.123456"


def test_a_period_is_claimed_once(db: str) -> None:
    now = utcnow()
    first = runs.claim("expire_holds", now, "2026-11-21T10:05", owner="task-a")
    assert first is not None
    assert runs.claim("expire_holds", now, "2026-11-21T10:05", owner="task-b") is None
    # the claiming task, redelivered after a crash, gets its run back to finish it, even
    # when it starts again in a later period
    assert runs.claim("expire_holds", now, "2026-11-21T10:05", owner="task-a") == first
    assert runs.claim("expire_holds", now, "2026-11-21T10:09", owner="task-a") == first
    # other jobs and other periods are independent
    assert runs.claim("expire_lots", now, "2026-11-21T10:05") is not None
    assert runs.claim("expire_holds", now, "2026-11-21T10:06") is not None
    assert runs.advance(first)
    assert runs.claim("expire_holds", now, "2026-11-21T10:05", owner="task-a") is None


def test_concurrent_claims_give_one_run(db: str) -> None:
    results: list[int | None] = []
    barrier = threading.Barrier(6)

    def claim() -> None:
        barrier.wait()
        results.append(runs.claim("reconcile", utcnow(), "2026-11-21"))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len([r for r in results if r is not None]) == 1
    assert len(job_runs()) == 1


def test_a_task_of_a_claimed_period_is_skipped(dust: Dust, monkeypatch: pytest.MonkeyPatch) -> None:
    start = datetime(2026, 11, 21, 10, 5, 1, tzinfo=UTC)
    monkeypatch.setattr(jobs, "utcnow", lambda: start)
    assert jobs.run_step(FakeTask("a"), "expire_holds", None) == "succeeded"
    # another beat's task 58 s later, same minute: skipped
    monkeypatch.setattr(jobs, "utcnow", lambda: start + timedelta(seconds=58))
    assert jobs.run_step(FakeTask("b"), "expire_holds", None) == "skipped"
    # the next minute is a new period
    monkeypatch.setattr(jobs, "utcnow", lambda: start + timedelta(seconds=60))
    assert jobs.run_step(FakeTask("c"), "expire_holds", None) == "succeeded"
    first, second = job_runs()
    assert (first.period, second.period) == ("2026-11-21T10:05", "2026-11-21T10:06")
    assert first.as_of == start and first.status == "succeeded" and first.finished_at
    counts = json.loads(first.counts or "{}")
    assert counts["claimed_by"] == "a" and counts["tasks"] == 1


def test_a_long_run_continues_in_new_tasks_and_finishes_once(dust: Dust) -> None:
    past = utcnow() - timedelta(days=1)
    for n in range(7):
        dust.grant(f"cus_{n}", 10 + n, expires_at=past)
    task = FakeTask("first")
    # no time budget: every task does one chunk (2 accounts) and hands over
    assert jobs.run_step(task, "expire_lots", None, chunk_size=2, budget=0) == "continued"
    steps = 1
    while task.sent:
        kwargs = task.sent.pop()
        assert kwargs["run_id"] is not None and kwargs["chunk_size"] == 2
        outcome = jobs.run_step(task, "expire_lots", **kwargs)
        steps += 1
    assert outcome == "succeeded" and steps == 4
    (run,) = job_runs()
    counts = json.loads(run.counts or "{}")
    assert run.status == "succeeded"
    assert counts["tasks"] == 4 and counts["entries"] == 7
    assert counts["amount"] == sum(10 + n for n in range(7))
    assert all(dust.dust(f"cus_{n}") == 0 for n in range(7))
    # a late duplicate of a continuation finds the run finished and does nothing
    assert jobs.run_step(task, "expire_lots", run.id) == "succeeded"
    assert len(dust.entries(reason="expiry")) == 7


def test_a_redelivered_task_resumes_its_run_instead_of_starting_another(
    dust: Dust, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = datetime(2026, 11, 21, 10, 5, 1, tzinfo=UTC)
    # due by the job's own instant, not by the wall clock: the test must not age
    past = start - timedelta(days=1)
    for n in range(3):
        dust.grant(f"cus_{n}", 10, expires_at=past)
    monkeypatch.setattr(jobs, "utcnow", lambda: start)
    task = FakeTask("beat-message-1")
    assert jobs.run_step(task, "expire_lots", None, chunk_size=1, budget=0) == "continued"
    # the worker dies before the message is acknowledged: the broker hands the same
    # message (same task id, no run id) out again, minutes later
    monkeypatch.setattr(jobs, "utcnow", lambda: start + timedelta(minutes=3))
    assert jobs.run_step(task, "expire_lots", None, chunk_size=10) == "succeeded"
    (run,) = job_runs()
    assert run.status == "succeeded" and run.period == "2026-11-21"
    assert json.loads(run.counts or "{}")["entries"] == 3
    # the continuation sent before the crash arrives late and finds nothing to do
    assert jobs.run_step(task, "expire_lots", **task.sent.pop()) == "succeeded"
    assert len(dust.entries(reason="expiry")) == 3


def test_a_reconciliation_split_over_tasks_stores_one_result(dust: Dust) -> None:
    for n in range(5):
        dust.grant(f"cus_{n}", 10)
    task = FakeTask()
    outcome = jobs.run_step(task, "reconcile", None, chunk_size=2, budget=0)
    while task.sent:
        outcome = jobs.run_step(task, "reconcile", **task.sent.pop())
    assert outcome == "succeeded"
    (run,) = job_runs()
    counts = json.loads(run.counts or "{}")
    assert counts["ok"] is True and counts["accounts"] == 5 and counts["tasks"] == 4


def test_an_error_marks_the_run_failed(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> bool:
        raise ValueError("boom")

    monkeypatch.setitem(runs.STEPS, "expire_lots", broken)
    assert jobs.run_step(FakeTask(), "expire_lots", None) == "failed"
    (run,) = job_runs()
    assert run.status == "failed" and run.finished_at is not None
    assert run.error == "ValueError: boom"


def test_a_transient_error_retries_the_same_run(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def flaky(*args: Any) -> bool:
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    monkeypatch.setitem(runs.STEPS, "expire_holds", flaky)
    task = FakeTask()
    with pytest.raises(RetryRequested):
        jobs.run_step(task, "expire_holds", None)
    (run,) = job_runs()
    assert run.status == "running"
    assert task.retried == {"run_id": run.id, "chunk_size": None, "budget": None}
    monkeypatch.undo()
    assert jobs.run_step(task, "expire_holds", run.id) == "succeeded"


# -- schedules ------------------------------------------------------------------------


def test_the_schedule_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = build_schedule(Settings())
    assert {name: entry["schedule"].total_seconds() for name, entry in defaults.items()} == {
        "expire_holds": 60,
        "expire_lots": 86400,
        "reconcile": 86400,
    }
    assert defaults["reconcile"]["task"] == "dust.reconcile"
    assert defaults["expire_holds"]["options"] == {"queue": JOBS_QUEUE, "expires": 60}

    monkeypatch.setenv("DUST_SCHEDULE_EXPIRE_HOLDS_SECONDS", "5")
    monkeypatch.setenv("DUST_SCHEDULE_EXPIRE_LOTS_SECONDS", "0")  # 0: not scheduled
    monkeypatch.setenv("DUST_SCHEDULE_RECONCILE_SECONDS", "3600")
    schedule = build_schedule(Settings())
    assert sorted(schedule) == ["expire_holds", "reconcile"]
    assert schedule["expire_holds"]["schedule"] == timedelta(seconds=5)
    assert schedule["reconcile"]["schedule"] == timedelta(hours=1)


@pytest.mark.parametrize("value", ["-1", "soon", "99999999"])
def test_a_bad_schedule_stops_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("DUST_SCHEDULE_RECONCILE_SECONDS", value)
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigError) as failure:
            get_settings()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    message = str(failure.value)
    assert "DUST_SCHEDULE_RECONCILE_SECONDS" in message and "\n" not in message


def test_the_app_routes_jobs_to_their_queue_and_keeps_beat_state_in_dust_dir() -> None:
    from dust.worker.app import app

    for task in ("dust.expire_holds", "dust.expire_lots", "dust.reconcile"):
        assert app.conf.task_routes[task] == {"queue": JOBS_QUEUE}
        assert task in app.tasks
    assert JOBS_QUEUE in {q.name for q in app.conf.task_queues}
    assert Path(app.conf.beat_schedule_filename).parts[-2:] == (".dust", "celerybeat-schedule")
    procfile = (ROOT / "Procfile").read_text()
    assert JOBS_QUEUE in next(line for line in procfile.splitlines() if line.startswith("worker:"))


# -- the commands ---------------------------------------------------------------------


def dust_cli(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUST_")}
    env["DUST_DATABASE_URL"] = db
    return subprocess.run(
        [str(DUST_BIN), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_dust_expire_twice_for_the_same_instant_changes_nothing(dust: Dust, db: str) -> None:
    dust.grant("cus_1", 100, expires_at=datetime(2026, 1, 1, tzinfo=UTC))
    dust.grant("cus_1", 40, expires_at=datetime(2026, 6, 1, tzinfo=UTC))
    dust.grant("cus_2", 30, expires_at=datetime(2026, 1, 2, tzinfo=UTC))
    first = dust_cli(db, "expire", "--as-of", "2026-03-01T00:00:00Z", "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["as_of"] == "2026-03-01T00:00:00+00:00"
    assert report["lots"]["status"] == "succeeded"
    assert report["lots"]["counts"]["amount"] == 130 and report["lots"]["counts"]["entries"] == 2
    before = dust.counts()
    again = dust_cli(db, "expire", "--as-of", "2026-03-01T00:00:00Z")
    assert again.returncode == 0, again.stderr
    assert "expired 0 dust" in again.stdout
    after = dust.counts()
    assert after.pop("dust_job_runs") == before.pop("dust_job_runs") + 2
    assert after == before
    assert (dust.dust("cus_1"), dust.dust("cus_2")) == (40, 0)

    listed = dust_cli(db, "jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["job"] for r in rows] == ["expire_lots", "expire_holds"] * 2
    assert all(r["status"] == "succeeded" and r["period"].startswith("cli:") for r in rows)


def test_dust_expire_refuses_a_bad_instant_in_one_line(db: str) -> None:
    done = dust_cli(db, "expire", "--as-of", "tomorrow")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "dust: --as-of must be an ISO 8601 instant, got 'tomorrow'"
    ]
