"""Scheduled jobs run by Celery beat: expire holds, expire lots, reconcile (queue ``dust.jobs``).

Each task is one step of a run (``tasks/runs.py``):

1. Sent by beat (no ``run_id``): the period is the task's start time floored to the job's
   schedule (``DUST_SCHEDULE_<JOB>_SECONDS``), and the task claims (job, period) in
   ``dust_job_runs``. If another scheduler's task already claimed it, it returns
   ``"skipped"`` and does nothing.
2. It works through chunks of accounts (one transaction each) until the run is done or the
   task has used a third of its soft time limit; then it sends itself again with the
   ``run_id`` (``"continued"``), so no task comes near the visibility timeout however large
   the ledger.
3. The task that finishes the last chunk marks the run ``succeeded``. A transient database
   error retries the same step with backoff; anything else marks the run ``failed``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from dust.models.base import utcnow
from dust.tasks import runs
from dust.tasks.inbox import is_transient, safe_message
from dust.worker.app import app
from dust.worker.beat import JOBS_QUEUE
from dust.worker.settings import get_settings

log = logging.getLogger(__name__)

#: Transient failures of a step are retried this many times before the run fails.
MAX_RETRIES = 5
#: A task takes new chunks until it has used this fraction of its soft time limit.
BUDGET_FRACTION = 1 / 3
#: Period length for a job sent by hand while unscheduled (DUST_SCHEDULE_..._SECONDS=0).
UNSCHEDULED_PERIOD_SECONDS = 60


def budget_seconds(task: Task) -> float:
    soft = task.soft_time_limit or app.conf.task_soft_time_limit or 60
    return float(soft) * BUDGET_FRACTION


def run_step(
    task: Task,
    job: str,
    run_id: int | None,
    chunk_size: int | None = None,
    budget: float | None = None,
) -> str:
    """One task's share of a run of ``job``; returns what happened (``skipped``,
    ``succeeded``, ``continued``, ``failed``)."""
    if run_id is None:
        now = utcnow()
        seconds = get_settings().job_schedule_seconds(job) or UNSCHEDULED_PERIOD_SECONDS
        period = runs.period_for(now, seconds)
        run_id = runs.claim(job, now, period, owner=task.request.id)
        if run_id is None:
            log.info("%s for period %s already claimed by another scheduler: skipped", job, period)
            return "skipped"
        log.info("%s run %s claimed period %s", job, run_id, period)
    deadline = time.monotonic() + (budget if budget is not None else budget_seconds(task))
    try:
        finished = runs.advance(run_id, deadline=deadline, chunk_size=chunk_size)
    except SoftTimeLimitExceeded:
        runs.fail(run_id, "a chunk outlasted the soft time limit; lower the chunk size")
        log.error("%s run %s: a chunk outlasted the soft time limit", job, run_id)
        return "failed"
    except Exception as exc:
        if is_transient(exc) and task.request.retries < MAX_RETRIES:
            log.warning("%s run %s: transient error (%s), retrying", job, run_id, safe_message(exc))
            raise task.retry(
                kwargs={"run_id": run_id, "chunk_size": chunk_size, "budget": budget},
                countdown=min(2 ** (task.request.retries + 1), 60),
            ) from None
        runs.fail(run_id, f"{type(exc).__name__}: {safe_message(exc)}")
        log.exception("%s run %s failed", job, run_id)
        return "failed"
    if not finished:
        task.apply_async(
            kwargs={"run_id": run_id, "chunk_size": chunk_size, "budget": budget},
            queue=JOBS_QUEUE,
        )
        log.info("%s run %s continues in a new task", job, run_id)
        return "continued"
    log.info("%s run %s succeeded", job, run_id)
    return "succeeded"


_OPTIONS: dict[str, Any] = {
    "bind": True,
    "ignore_result": True,
    "max_retries": None,
    # Leave a message whose step could not even record its failure for redelivery.
    "acks_on_failure_or_timeout": False,
}


@app.task(name="dust.expire_holds", **_OPTIONS)
def expire_holds(
    self: Task,
    run_id: int | None = None,
    chunk_size: int | None = None,
    budget: float | None = None,
) -> str:
    """Expire the active holds due by now (every minute by default)."""
    return run_step(self, "expire_holds", run_id, chunk_size, budget)


@app.task(name="dust.expire_lots", **_OPTIONS)
def expire_lots(
    self: Task,
    run_id: int | None = None,
    chunk_size: int | None = None,
    budget: float | None = None,
) -> str:
    """Expire the lots due by now (daily by default)."""
    return run_step(self, "expire_lots", run_id, chunk_size, budget)


@app.task(name="dust.reconcile", **_OPTIONS)
def reconcile(
    self: Task,
    run_id: int | None = None,
    chunk_size: int | None = None,
    budget: float | None = None,
) -> str:
    """Check the ledger against itself and store the reconciliation (nightly by default)."""
    return run_step(self, "reconcile", run_id, chunk_size, budget)
