"""refund caps and dust returns

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 06:30:00

Compatible with the code of 0002 during a deploy: every new column is nullable or has a
server default (a refund that code records is ``applied``, as it treats every refund), and
the refund amount check only widens (``amount > 0`` still passes ``amount >= 0 ...``).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dust_orders") as batch:
        batch.add_column(sa.Column("refund_cap", sa.BigInteger(), nullable=True))
        batch.add_column(
            sa.Column("dust_given_back", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch.create_check_constraint(
            op.f("ck_dust_orders_given_back"),
            "dust_given_back >= 0 AND dust_given_back <= charged_dust"
            " AND (refund_cap IS NULL OR refund_cap >= 0)",
        )
    with op.batch_alter_table("dust_refunds") as batch:
        batch.add_column(
            sa.Column("dust_amount", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column("dust_returned", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column("status", sa.String(length=10), server_default="applied", nullable=False)
        )
        batch.add_column(sa.Column("held_reason", sa.Text(), nullable=True))
        batch.drop_constraint(op.f("ck_dust_refunds_amount_positive"), type_="check")
        batch.create_check_constraint(
            op.f("ck_dust_refunds_amounts"),
            "amount >= 0 AND dust_amount >= 0 AND amount + dust_amount > 0",
        )
        batch.create_check_constraint(
            op.f("ck_dust_refunds_returned"), "dust_returned >= 0 AND dust_returned <= dust_amount"
        )
        batch.create_check_constraint(
            op.f("ck_dust_refunds_status"), "status IN ('waiting', 'applied', 'held')"
        )


def downgrade() -> None:
    with op.batch_alter_table("dust_refunds") as batch:
        batch.drop_constraint(op.f("ck_dust_refunds_status"), type_="check")
        batch.drop_constraint(op.f("ck_dust_refunds_returned"), type_="check")
        batch.drop_constraint(op.f("ck_dust_refunds_amounts"), type_="check")
        batch.create_check_constraint(op.f("ck_dust_refunds_amount_positive"), "amount > 0")
        batch.drop_column("held_reason")
        batch.drop_column("status")
        batch.drop_column("dust_returned")
        batch.drop_column("dust_amount")
    with op.batch_alter_table("dust_orders") as batch:
        batch.drop_constraint(op.f("ck_dust_orders_given_back"), type_="check")
        batch.drop_column("dust_given_back")
        batch.drop_column("refund_cap")
