"""The worker process's hooks at start, loaded by Celery with the task modules
(``include`` in ``worker/app.py``): a worker that cannot reach its database, or finds its
schema behind, stops at once; the main process serves ``/metrics`` when asked to."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_init, worker_ready
from sqlalchemy import func, select

from dust.models import Event, Reconciliation
from dust.runtime import health
from dust.worker import metrics
from dust.worker.app import app
from dust.worker.db import session_scope
from dust.worker.settings import ConfigError, get_settings


@worker_init.connect
def _check_before_start(**_: Any) -> None:
    """A worker that cannot reach its database, or finds its schema behind, stops at
    start with one line, instead of saying "ready" and requeueing every event."""
    settings = get_settings()
    for check in (health.database, health.schema):
        found = check(settings)
        if not found.ok:
            raise ConfigError(f"dust: worker not started: {found.name}: {found.detail}")


@worker_ready.connect
def _serve_metrics(**_: Any) -> None:
    port = get_settings().metrics_port
    if port:
        metrics.serve(app, port, ledger_state)


def ledger_state() -> tuple[dict[str, int], bool | None]:
    """Counts of ``failed`` and ``needs_attention`` events, and whether the last stored
    reconciliation was ok (None before the first)."""
    with session_scope() as session:
        rows = session.execute(
            select(Event.status, func.count())
            .where(Event.status.in_(("failed", "needs_attention")))
            .group_by(Event.status)
        ).all()
        last = session.scalar(select(Reconciliation.ok).order_by(Reconciliation.id.desc()).limit(1))
    return {status: count for status, count in rows}, last
