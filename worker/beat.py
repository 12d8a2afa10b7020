"""The beat schedule of the scheduled jobs, built in one place from the settings.

``celery -A dust.worker.app beat`` sends each job's task on the queue ``dust.jobs`` every
``DUST_SCHEDULE_<JOB>_SECONDS`` (0 leaves the job unscheduled). Beat keeps its state (when
each entry last ran) in a local shelve file, ``./.dust/celerybeat-schedule`` in the working
directory (``celery beat -s FILE`` overrides it). That file only saves beat from re-sending
after a restart; the guard against running a job twice is in the database: a run claims
UNIQUE (job, period) in ``dust_job_runs``, so even two beat processes run each job once
per period.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from celery.beat import PersistentScheduler

from dust.worker.settings import Settings

#: Scheduled jobs: name → Celery task name (stable: beat entries and messages use it).
JOBS = {
    "expire_holds": "dust.expire_holds",
    "expire_lots": "dust.expire_lots",
    "reconcile": "dust.reconcile",
}
JOBS_QUEUE = "dust.jobs"


def build_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """``app.conf.beat_schedule`` for ``settings``: one entry per scheduled job."""
    schedule: dict[str, dict[str, Any]] = {}
    for job, task in JOBS.items():
        seconds = settings.job_schedule_seconds(job)
        if seconds <= 0:
            continue
        schedule[job] = {
            "task": task,
            "schedule": timedelta(seconds=seconds),
            "options": {
                "queue": JOBS_QUEUE,
                # A message older than its period is stale: the next one does the same
                # work with a fresher instant, so a backlog after an outage is dropped.
                "expires": seconds,
            },
        }
    return schedule


class Scheduler(PersistentScheduler):
    """The default shelve scheduler, creating the folder of its file first."""

    def setup_schedule(self) -> None:
        Path(self.schedule_filename).parent.mkdir(parents=True, exist_ok=True)
        super().setup_schedule()
