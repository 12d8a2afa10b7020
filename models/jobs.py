"""Tables of the scheduled jobs and admin one-off work: runs, reconciliations, backfills."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from dust.models.base import Base, BigId, UTCDateTime, utcnow


class JobRun(Base):
    """One run of a scheduled job for one period. UNIQUE (job, period) is the guard that
    makes two beat processes run each job once per period."""

    __tablename__ = "dust_job_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job: Mapped[str] = mapped_column(String(50))
    #: The period this run covers, e.g. ``2026-11-21T10:05`` (aligned to the job's interval).
    period: Mapped[str] = mapped_column(String(40))
    as_of: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(10), default="running")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: JSON object of what the run did (expired lots, discrepancies, ...).
    counts: Mapped[str | None] = mapped_column(Text)
    #: Where a run split over several tasks continues (e.g. the next account id).
    cursor: Mapped[str | None] = mapped_column(String(100))
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("job", "period"),
        CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="status"),
    )


class Reconciliation(Base):
    """One reconciliation of the ledger: when, what it counted, what disagreed, and
    whether caches were rebuilt from the journal (``--repair``)."""

    __tablename__ = "dust_reconciliations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_run_id: Mapped[int | None] = mapped_column(ForeignKey("dust_job_runs.id"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    as_of: Mapped[datetime] = mapped_column(UTCDateTime)
    ok: Mapped[bool] = mapped_column(Boolean)
    checked: Mapped[str] = mapped_column(Text)
    discrepancy_count: Mapped[int] = mapped_column(Integer, default=0)
    #: JSON list of the discrepancies (the first 1000).
    discrepancies: Mapped[str] = mapped_column(Text)
    repaired: Mapped[bool] = mapped_column(Boolean, default=False)
    #: JSON list of the caches rebuilt by ``--repair`` (account, column, before, after).
    repairs: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(String(200))


class Backfill(Base):
    """A historical JSONL load; batches done are remembered so an interrupted load resumes."""

    __tablename__ = "dust_backfills"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: sha256 of the file's size and first and last 64 KiB: the same file resumes.
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(Text)
    lines_total: Mapped[int] = mapped_column(BigInteger, default=0)
    lines_done: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(10), default="running")
    actor: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (CheckConstraint("status IN ('running', 'finished')", name="status"),)


class BackfillBatch(Base):
    """A batch of lines of a backfill, applied (through the inbox) in one task."""

    __tablename__ = "dust_backfill_batches"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    backfill_id: Mapped[int] = mapped_column(ForeignKey("dust_backfills.id"))
    first_line: Mapped[int] = mapped_column(BigInteger)
    line_count: Mapped[int] = mapped_column(Integer)
    counts: Mapped[str | None] = mapped_column(Text)
    done_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("backfill_id", "first_line"),)
