"""event resolutions: needs_attention and failed events can be closed by an admin

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 06:40:00

Adds the status ``resolved`` to ``dust_events`` and the audit table
``dust_event_resolutions``. Code from before this revision never writes ``resolved`` and
never reads the new table, so it runs unchanged on the migrated schema during a deploy.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BEFORE = "status IN ('processed', 'ignored', 'rejected', 'needs_attention', 'failed')"
AFTER = "status IN ('processed', 'ignored', 'rejected', 'needs_attention', 'failed', 'resolved')"
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("dust_events") as batch:
        batch.drop_constraint(op.f("ck_dust_events_status"), type_="check")
        batch.create_check_constraint(op.f("ck_dust_events_status"), AFTER)
    op.create_table(
        "dust_event_resolutions",
        sa.Column("id", BigId, nullable=False),
        sa.Column("event_id", sa.String(length=250), nullable=False),
        sa.Column("previous_status", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("entry_id", BigId, nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["dust_events.event_id"],
            name=op.f("fk_dust_event_resolutions_event_id_dust_events"),
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["dust_entries.id"],
            name=op.f("fk_dust_event_resolutions_entry_id_dust_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dust_event_resolutions")),
        sa.UniqueConstraint("event_id", name=op.f("uq_dust_event_resolutions_event_id")),
    )


def downgrade() -> None:
    op.drop_table("dust_event_resolutions")
    op.execute("UPDATE dust_events SET status = 'needs_attention' WHERE status = 'resolved'")
    with op.batch_alter_table("dust_events") as batch:
        batch.drop_constraint(op.f("ck_dust_events_status"), type_="check")
        batch.create_check_constraint(op.f("ck_dust_events_status"), BEFORE)
