"""Runs of the scheduled jobs: claim (job, period) once, work in chunks, record the outcome.

No Celery here: ``tasks/jobs.py`` wraps it in the beat tasks and ``worker/cli_jobs.py``
runs the same code in-process (``dust expire``, ``dust reconcile``).

* **Once per period.** A run starts by inserting its ``dust_job_runs`` row; UNIQUE (job,
  period) makes a second claim for the same period — another beat process's task — fail,
  and that task does nothing. The guard lives in the database, so it holds across processes
  and machines.
* **Chunks.** A run works through accounts in id order, a chunk of accounts per
  transaction. The run row is locked (``FOR UPDATE``) and its ``cursor`` (last account id
  done) and ``counts`` are updated in the same transaction as the chunk's work, so a crash
  loses at most the chunk in progress and a continuation resumes exactly after the last
  committed one. Two copies of a continuation (a redelivery) serialize on the run row.
  A reconciliation chunk is checked in two parts at once on PostgreSQL, the second on a
  read-only connection of its own (``RECONCILE_PARALLEL``); what it finds is recorded in
  the chunk's transaction.
* **Recorded.** ``started_at``, ``finished_at``, ``status`` (running → succeeded | failed),
  ``counts`` (JSON: what the run did, ``tasks`` it took, ``claimed_by``), ``error``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dust.ledger import expiry, holds, reconcile
from dust.models import Account, JobRun, Reconciliation
from dust.models.base import utcnow
from dust.worker.db import session_scope
from dust.worker.settings import get_settings

JOBS = ("expire_holds", "expire_lots", "reconcile")
#: Accounts per transaction: small enough that a chunk's locks and work stay short
#: beside the soft time limit, large enough that per-chunk costs do not add up. A
#: reconciliation chunk is one statement over its accounts' entries, and fewer, larger
#: chunks cost less in all (chunk sizes compared in BENCHMARKS.md, "Reconciliation after
#: the rewrite"); a task stops taking new chunks after a third of its soft time limit and
#: continues in a new task.
CHUNK_ACCOUNTS = {"expire_holds": 5000, "expire_lots": 5000, "reconcile": 100_000}
#: Parts of a reconciliation chunk checked at the same time on PostgreSQL, each on a
#: connection of its own (1: one statement per chunk). PostgreSQL gives the bare aggregate
#: two parallel workers by default (max_parallel_workers_per_gather = 2).
RECONCILE_PARALLEL = 2
#: Actor of the reconciliations run by the scheduler.
SCHEDULER = "scheduler"

Sink = list[dict[str, Any]]


def period_for(now: datetime, seconds: int) -> str:
    """The period containing ``now`` for a job run every ``seconds``: ``now`` floored to a
    multiple of ``seconds`` since the epoch (so daily periods start at 00:00 UTC), written
    as a date, a minute or a second as the interval needs."""
    seconds = max(1, seconds)
    start = datetime.fromtimestamp(int(now.timestamp()) // seconds * seconds, UTC)
    if seconds % 86400 == 0:
        return start.strftime("%Y-%m-%d")
    if seconds % 60 == 0:
        return start.strftime("%Y-%m-%dT%H:%M")
    return start.strftime("%Y-%m-%dT%H:%M:%S")


def manual_period(now: datetime) -> str:
    """The period of a run started by hand (``dust expire``): unique to the instant."""
    return "cli:" + now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def claim(
    job: str, as_of: datetime, period: str, *, owner: str | None = None, actor: str | None = None
) -> int | None:
    """Insert the run of ``job`` for ``period``; its id, or None when the period is already
    claimed. A claim by an ``owner`` (task id) that already claimed a run still running —
    the same message redelivered after a crash — gets that run back, whatever the period
    now, so it resumes instead of leaving the run unfinished."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}")
    if owner is not None:
        # A redelivered task starts later, maybe in the next period: find its run first.
        mine = _running_run_of(job, owner)
        if mine is not None:
            return mine
    try:
        with session_scope() as session:
            run = JobRun(
                job=job,
                period=period,
                as_of=as_of,
                status="running",
                started_at=utcnow(),
                counts=json.dumps({"tasks": 0, "claimed_by": owner}),
            )
            session.add(run)
            session.flush()
            if job == "reconcile":
                record = reconcile.open_record(session, as_of, run.id, actor or SCHEDULER)
                run.counts = json.dumps(
                    {"tasks": 0, "claimed_by": owner, "reconciliation_id": record.id}
                )
            return run.id
    except IntegrityError:
        with session_scope(read_only=True) as session:
            existing = session.scalar(
                select(JobRun).where(JobRun.job == job, JobRun.period == period)
            )
        if existing is None:
            raise
        return None


def _running_run_of(job: str, owner: str) -> int | None:
    """The run of ``job`` still running that task ``owner`` claimed, if any (running runs
    are few: this reads only them)."""
    with session_scope(read_only=True) as session:
        running = session.scalars(
            select(JobRun).where(JobRun.job == job, JobRun.status == "running")
        ).all()
    for run in running:
        if json.loads(run.counts or "{}").get("claimed_by") == owner:
            return run.id
    return None


def advance(
    run_id: int,
    *,
    deadline: float | None = None,
    chunk_size: int | None = None,
    sink: Sink | None = None,
) -> bool:
    """Work on run ``run_id`` chunk by chunk until it is done (True) or ``time.monotonic()``
    passes ``deadline`` (False: continue later). At least one chunk is done per call.
    ``sink`` collects a reconciliation's discrepancies in full (the run stores the first
    1000)."""
    first = True
    while True:
        with session_scope() as session:
            run = session.scalar(
                select(JobRun)
                .where(JobRun.id == run_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            if run is None:
                raise LookupError(f"no job run {run_id}")
            if run.status != "running":
                return True
            counts = json.loads(run.counts or "{}")
            if first:
                counts["tasks"] = counts.get("tasks", 0) + 1
                first = False
            size = chunk_size or CHUNK_ACCOUNTS[run.job]
            done = STEPS[run.job](session, run, counts, size, sink)
            counts["chunks"] = counts.get("chunks", 0) + 1
            run.counts = json.dumps(counts)
            if done:
                run.status = "succeeded"
                run.finished_at = utcnow()
        if done:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False


def fail(run_id: int, error: str) -> None:
    """Record that run ``run_id`` failed (if it is still running)."""
    with session_scope() as session:
        session.execute(
            update(JobRun)
            .where(JobRun.id == run_id, JobRun.status == "running")
            .values(status="failed", finished_at=utcnow(), error=error[:2000])
        )


def run_now(
    job: str,
    as_of: datetime,
    *,
    actor: str | None = None,
    sink: Sink | None = None,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """Run ``job`` to the end in this process, as a run of its own (``dust expire``,
    ``dust reconcile``); returns the recorded run."""
    run_id = claim(job, as_of, manual_period(utcnow()), owner="cli", actor=actor)
    if run_id is None:  # two runs by hand in the same microsecond
        raise RuntimeError(f"could not start a run of {job}, try again")
    try:
        advance(run_id, chunk_size=chunk_size, sink=sink)
    except Exception as exc:
        fail(run_id, f"{type(exc).__name__}: {exc}")
        raise
    return load(run_id)


def load(run_id: int) -> dict[str, Any]:
    with session_scope(read_only=True) as session:
        run = session.get(JobRun, run_id)
        if run is None:
            raise LookupError(f"no job run {run_id}")
        return run_json(run)


def run_json(run: JobRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "job": run.job,
        "period": run.period,
        "as_of": run.as_of.isoformat(),
        "status": run.status,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "counts": json.loads(run.counts) if run.counts else {},
        "cursor": run.cursor,
        "error": run.error,
    }


def recent(session: Session, limit: int = 50, job: str | None = None) -> list[dict[str, Any]]:
    stmt = select(JobRun).order_by(JobRun.id.desc()).limit(limit)
    if job:
        stmt = stmt.where(JobRun.job == job)
    return [run_json(run) for run in session.scalars(stmt)]


# -- one chunk of each job -------------------------------------------------------------------


def _add(counts: dict[str, Any], chunk: dict[str, int]) -> None:
    for name, value in chunk.items():
        counts[name] = counts.get(name, 0) + value


def _expire_holds(
    session: Session, run: JobRun, counts: dict[str, Any], size: int, sink: Sink | None
) -> bool:
    done = holds.expire_holds_chunk(session, run.as_of, after_id=int(run.cursor or 0), limit=size)
    _add(counts, done.as_counts())
    if done.last_account_id is None or done.accounts < size:
        return True
    run.cursor = str(done.last_account_id)
    return False


def _expire_lots(
    session: Session, run: JobRun, counts: dict[str, Any], size: int, sink: Sink | None
) -> bool:
    done = expiry.expire_lots(
        session,
        run.as_of,
        after_id=int(run.cursor or 0),
        limit=size,
        reference_id=f"job_run:{run.id}",
    )
    _add(counts, done.as_counts())
    if done.last_account_id is None or done.accounts < size:
        return True
    run.cursor = str(done.last_account_id)
    return False


def last_lot_run(session: Session) -> tuple[datetime, datetime] | None:
    """``(as_of, started_at)`` of the succeeded lot run that covered the latest instant:
    no lot made before it started may be pending past ``as_of``."""
    stmt = (
        select(JobRun.as_of, JobRun.started_at)
        .where(JobRun.job == "expire_lots", JobRun.status == "succeeded")
        .order_by(JobRun.as_of.desc())
        .limit(1)
    )
    row = session.execute(stmt).first()
    return (row[0], row[1]) if row is not None else None


def stale_hold_grace() -> int:
    """How long past its expiry a hold may still be active before reconciliation calls it
    stale: the hold-expiry job comes round every interval (twice that, for a late run)."""
    interval = get_settings().schedule_expire_holds_seconds
    return 2 * max(interval, 30) if interval else 0


def _reconcile(
    session: Session, run: JobRun, counts: dict[str, Any], size: int, sink: Sink | None
) -> bool:
    record = session.scalar(select(Reconciliation).where(Reconciliation.job_run_id == run.id))
    if record is None:
        record = reconcile.open_record(session, run.as_of, run.id, SCHEDULER)
        counts["reconciliation_id"] = record.id
    window = (
        select(Account.id)
        .where(Account.id > int(run.cursor or 0))
        .order_by(Account.id)
        .limit(size)
        .subquery()
    )
    lo, hi = session.execute(select(func.min(window.c.id), func.max(window.c.id))).one()
    if lo is None:
        checked, found = reconcile.check_rest(session, last_lot_run(session))
    else:
        checked, found = _check_accounts(session, run.as_of, lo, hi, stale_hold_grace())
        run.cursor = str(hi)
    reconcile.add_to_record(record, checked, found)
    if sink is not None:
        sink.extend(found)
    counts["accounts"] = counts.get("accounts", 0) + int(checked.get("accounts", 0))
    counts["entries"] = counts.get("entries", 0) + int(checked.get("entries", 0))
    counts["discrepancies"] = record.discrepancy_count
    if lo is not None:
        return False
    reconcile.close_record(record)
    counts["ok"] = record.ok
    return True


def _check_accounts(
    session: Session, as_of: datetime, lo: int, hi: int, grace_seconds: int
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """``reconcile.check_accounts`` over ``lo``..``hi``. On PostgreSQL the range is split in
    ``RECONCILE_PARALLEL`` parts checked at the same time: the first in this transaction,
    each other one in a read-only transaction on a connection of its own (the work the
    database's parallel workers do for a plain aggregate, which this statement, with its
    window over each account's entries, cannot hand them). Each statement reads what was
    committed when it started, whichever connection runs it, so the result is the parts'
    checked one after the other: the same counts, the same discrepancies, same order."""
    parts = RECONCILE_PARALLEL if session.get_bind().dialect.name == "postgresql" else 1
    step = (hi - lo + 1) // max(parts, 1)
    if parts < 2 or step < 1:
        return reconcile.check_accounts(session, as_of, lo, hi, grace_seconds=grace_seconds)
    bounds = [(lo + n * step, lo + (n + 1) * step - 1) for n in range(parts)]
    bounds[-1] = (bounds[-1][0], hi)
    engine = session.get_bind()

    def elsewhere(part: tuple[int, int]) -> tuple[dict[str, int], list[dict[str, Any]]]:
        with session_scope(engine, read_only=True) as other:  # type: ignore[arg-type]
            return reconcile.check_accounts(other, as_of, *part, grace_seconds=grace_seconds)

    with ThreadPoolExecutor(max_workers=parts - 1) as pool:
        others = [pool.submit(elsewhere, part) for part in bounds[1:]]
        results = [
            reconcile.check_accounts(session, as_of, *bounds[0], grace_seconds=grace_seconds)
        ]
        results += [future.result() for future in others]
    counts: dict[str, Any] = {}
    found: list[dict[str, Any]] = []
    for part_counts, part_found in results:
        _add(counts, part_counts)
        found += part_found
    # each part lists its discrepancies check by check: bring each check's together, the
    # parts in range order (a stable sort)
    order = {check: n for n, check in enumerate(reconcile.PER_ACCOUNT_CHECKS)}
    found.sort(key=lambda d: order[d["check"]])
    return counts, found


Step = Callable[[Session, JobRun, dict[str, Any], int, Sink | None], bool]
STEPS: dict[str, Step] = {
    "expire_holds": _expire_holds,
    "expire_lots": _expire_lots,
    "reconcile": _reconcile,
}
