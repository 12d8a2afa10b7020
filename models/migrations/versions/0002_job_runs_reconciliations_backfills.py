"""job runs, reconciliations, backfills

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 19:56:24.305256
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dust_backfills",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("lines_total", sa.BigInteger(), nullable=False),
        sa.Column("lines_done", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'finished')", name=op.f("ck_dust_backfills_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dust_backfills")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_dust_backfills_fingerprint")),
    )
    op.create_table(
        "dust_job_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job", sa.String(length=50), nullable=False),
        sa.Column("period", sa.String(length=40), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("counts", sa.Text(), nullable=True),
        sa.Column("cursor", sa.String(length=100), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed')", name=op.f("ck_dust_job_runs_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dust_job_runs")),
        sa.UniqueConstraint("job", "period", name=op.f("uq_dust_job_runs_job_period")),
    )
    op.create_table(
        "dust_backfill_batches",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "backfill_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("first_line", sa.BigInteger(), nullable=False),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("counts", sa.Text(), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["backfill_id"],
            ["dust_backfills.id"],
            name=op.f("fk_dust_backfill_batches_backfill_id_dust_backfills"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dust_backfill_batches")),
        sa.UniqueConstraint(
            "backfill_id",
            "first_line",
            name=op.f("uq_dust_backfill_batches_backfill_id_first_line"),
        ),
    )
    op.create_table(
        "dust_reconciliations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "job_run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("checked", sa.Text(), nullable=False),
        sa.Column("discrepancy_count", sa.Integer(), nullable=False),
        sa.Column("discrepancies", sa.Text(), nullable=False),
        sa.Column("repaired", sa.Boolean(), nullable=False),
        sa.Column("repairs", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_run_id"],
            ["dust_job_runs.id"],
            name=op.f("fk_dust_reconciliations_job_run_id_dust_job_runs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dust_reconciliations")),
    )


def downgrade() -> None:
    op.drop_table("dust_reconciliations")
    op.drop_table("dust_backfill_batches")
    op.drop_table("dust_job_runs")
    op.drop_table("dust_backfills")
