"""a copy of each customer's latest group record on the dust account

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-01 10:40:00

``dust_accounts.groups_at`` / ``groups_event_id`` / ``group_ids``: the customer's latest
``dust_customer_groups`` record, kept under the account's row lock, so an order placed at
or after it reads its groups with the account lock it takes anyway (no statement of its
own). Filled here from the records stored so far; a customer with records and no dust
account gets one (empty), as ``customer.created`` / ``customer.updated`` would have opened.

Additive (nullable columns). Code of 0005 running against it during a deploy would store
group records without updating the copy, so stop the workers across this upgrade (as for
any upgrade that fills a column from other rows).
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None

GROUPS_COPY = (
    "(groups_at IS NULL AND groups_event_id IS NULL AND group_ids IS NULL)"
    " OR (kind = 'dust' AND groups_at IS NOT NULL AND groups_event_id IS NOT NULL"
    " AND group_ids IS NOT NULL)"
)

#: The customer's latest record, in the order ``dust.ledger.rules.group_histories`` reads them.
LATEST = (
    "SELECT g.{column} FROM dust_customer_groups g"
    " WHERE g.customer_id = dust_accounts.customer_id"
    " ORDER BY g.occurred_at DESC, g.event_id DESC LIMIT 1"
)


def upgrade() -> None:
    op.add_column("dust_accounts", sa.Column("groups_at", sa.DateTime(timezone=True)))
    op.add_column("dust_accounts", sa.Column("groups_event_id", sa.String(length=250)))
    # A column CHECK in ADD COLUMN: both PostgreSQL and SQLite take it without rebuilding
    # the table (as 0005 did for ``pending``).
    op.execute(
        "ALTER TABLE dust_accounts ADD COLUMN group_ids TEXT"
        f" CONSTRAINT ck_dust_accounts_groups CHECK ({GROUPS_COPY})"
    )
    op.execute(
        "INSERT INTO dust_accounts (customer_id, kind, balance, held, pending, created_at)"
        " SELECT g.customer_id, 'dust', 0, 0, 0, MIN(g.recorded_at)"
        " FROM dust_customer_groups g"
        " WHERE NOT EXISTS (SELECT 1 FROM dust_accounts a"
        " WHERE a.customer_id = g.customer_id AND a.kind = 'dust')"
        " GROUP BY g.customer_id"
    )
    op.execute(
        "UPDATE dust_accounts SET"
        f" groups_at = ({LATEST.format(column='occurred_at')}),"
        f" groups_event_id = ({LATEST.format(column='event_id')}),"
        f" group_ids = ({LATEST.format(column='group_ids')})"
        " WHERE kind = 'dust' AND EXISTS (SELECT 1 FROM dust_customer_groups g"
        " WHERE g.customer_id = dust_accounts.customer_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("dust_accounts") as batch:
        batch.drop_constraint(op.f("ck_dust_accounts_groups"), type_="check")
        batch.drop_column("group_ids")
        batch.drop_column("groups_event_id")
        batch.drop_column("groups_at")
