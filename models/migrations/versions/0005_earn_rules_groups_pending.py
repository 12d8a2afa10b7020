"""earn rules, customer groups, pending dust

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 06:20:00

Additive only (new tables, new columns with defaults or nullable), so the code of 0004
keeps running against it during a deploy: it never writes the new columns, whose
defaults mean "no multiplier" and "nothing pending".
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Rules are never deleted and their terms never change; ``ends_at`` may only be set or
# brought earlier. Their audit trail is append-only.
GUARDS = {
    "postgresql": [
        """
        CREATE FUNCTION dust_earn_rules_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                RAISE EXCEPTION 'dust_earn_rules: rules are never deleted (end them)';
            END IF;
            IF (NEW.id, NEW.kind, NEW.group_id, NEW.multiplier, NEW.amount, NEW.currency_code,
                NEW.name, NEW.starts_at, NEW.created_at, NEW.actor, NEW.reason)
               IS DISTINCT FROM
               (OLD.id, OLD.kind, OLD.group_id, OLD.multiplier, OLD.amount, OLD.currency_code,
                OLD.name, OLD.starts_at, OLD.created_at, OLD.actor, OLD.reason) THEN
                RAISE EXCEPTION 'dust_earn_rules: a rule''s terms never change (end it, add another)';
            END IF;
            IF OLD.ends_at IS NOT NULL AND (NEW.ends_at IS NULL OR NEW.ends_at > OLD.ends_at) THEN
                RAISE EXCEPTION 'dust_earn_rules: an end is only ever brought earlier';
            END IF;
            RETURN NEW;
        END $$
        """,
        """
        CREATE TRIGGER dust_earn_rules_guard BEFORE UPDATE OR DELETE ON dust_earn_rules
            FOR EACH ROW EXECUTE FUNCTION dust_earn_rules_guard()
        """,
        """
        CREATE FUNCTION dust_earn_rule_changes_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'dust_earn_rule_changes is append-only: % refused', TG_OP;
        END $$
        """,
        """
        CREATE TRIGGER dust_earn_rule_changes_append_only
            BEFORE UPDATE OR DELETE ON dust_earn_rule_changes
            FOR EACH ROW EXECUTE FUNCTION dust_earn_rule_changes_append_only()
        """,
    ],
    "sqlite": [
        """CREATE TRIGGER dust_earn_rules_no_delete BEFORE DELETE ON dust_earn_rules
           BEGIN SELECT RAISE(ABORT, 'dust_earn_rules: rules are never deleted (end them)'); END""",
        """CREATE TRIGGER dust_earn_rules_terms BEFORE UPDATE OF id, kind, group_id, multiplier,
               amount, currency_code, name, starts_at, created_at, actor, reason ON dust_earn_rules
           BEGIN SELECT RAISE(ABORT,
               'dust_earn_rules: a rule''s terms never change (end it, add another)'); END""",
        """CREATE TRIGGER dust_earn_rules_end BEFORE UPDATE OF ends_at ON dust_earn_rules
           WHEN OLD.ends_at IS NOT NULL AND (NEW.ends_at IS NULL OR NEW.ends_at > OLD.ends_at)
           BEGIN SELECT RAISE(ABORT,
               'dust_earn_rules: an end is only ever brought earlier'); END""",
        """CREATE TRIGGER dust_earn_rule_changes_no_update BEFORE UPDATE ON dust_earn_rule_changes
           BEGIN SELECT RAISE(ABORT,
               'dust_earn_rule_changes is append-only: UPDATE refused'); END""",
        """CREATE TRIGGER dust_earn_rule_changes_no_delete BEFORE DELETE ON dust_earn_rule_changes
           BEGIN SELECT RAISE(ABORT,
               'dust_earn_rule_changes is append-only: DELETE refused'); END""",
    ],
}
DROP_GUARDS = {
    "postgresql": [
        "DROP TRIGGER IF EXISTS dust_earn_rule_changes_append_only ON dust_earn_rule_changes",
        "DROP FUNCTION IF EXISTS dust_earn_rule_changes_append_only()",
        "DROP TRIGGER IF EXISTS dust_earn_rules_guard ON dust_earn_rules",
        "DROP FUNCTION IF EXISTS dust_earn_rules_guard()",
    ],
    "sqlite": [
        "DROP TRIGGER IF EXISTS dust_earn_rule_changes_no_delete",
        "DROP TRIGGER IF EXISTS dust_earn_rule_changes_no_update",
        "DROP TRIGGER IF EXISTS dust_earn_rules_end",
        "DROP TRIGGER IF EXISTS dust_earn_rules_terms",
        "DROP TRIGGER IF EXISTS dust_earn_rules_no_delete",
    ],
}

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "dust_earn_rules",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("group_id", sa.String(length=200), nullable=True),
        sa.Column("multiplier", sa.String(length=40), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("currency_code", sa.String(length=3), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('group_multiplier', 'campaign', 'welcome_bonus')",
            name=op.f("ck_dust_earn_rules_kind"),
        ),
        sa.CheckConstraint(
            "(kind = 'group_multiplier' AND group_id IS NOT NULL AND multiplier IS NOT NULL"
            " AND amount IS NULL)"
            " OR (kind = 'campaign' AND group_id IS NULL AND multiplier IS NOT NULL"
            " AND amount IS NULL)"
            " OR (kind = 'welcome_bonus' AND group_id IS NULL AND multiplier IS NULL"
            " AND amount > 0 AND currency_code IS NULL)",
            name=op.f("ck_dust_earn_rules_kind_fields"),
        ),
        sa.CheckConstraint(
            "ends_at IS NULL OR ends_at >= starts_at", name=op.f("ck_dust_earn_rules_window")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dust_earn_rules")),
    )
    op.create_index("ix_dust_earn_rules_starts_at", "dust_earn_rules", ["starts_at"])
    op.create_table(
        "dust_earn_rule_changes",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("rule_id", BIG_ID, nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("ends_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ends_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "action IN ('add', 'end')", name=op.f("ck_dust_earn_rule_changes_action")
        ),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["dust_earn_rules.id"],
            name=op.f("fk_dust_earn_rule_changes_rule_id_dust_earn_rules"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dust_earn_rule_changes")),
    )
    op.create_index("ix_dust_earn_rule_changes_rule_id", "dust_earn_rule_changes", ["rule_id"])
    op.create_table(
        "dust_customer_groups",
        sa.Column("event_id", sa.String(length=250), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("group_ids", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_dust_customer_groups")),
    )
    op.create_index(
        "ix_dust_customer_groups_customer",
        "dust_customer_groups",
        ["customer_id", "occurred_at"],
    )
    op.add_column("dust_orders", sa.Column("earn_multiplier", sa.String(length=40)))
    op.add_column("dust_orders", sa.Column("earn_rules", sa.Text()))
    op.add_column("dust_lots", sa.Column("pending_until", sa.DateTime(timezone=True)))
    op.create_index(
        "ix_dust_lots_pending",
        "dust_lots",
        ["pending_until", "account_id"],
        postgresql_where=sa.text("pending_until IS NOT NULL"),
        sqlite_where=sa.text("pending_until IS NOT NULL"),
    )
    # A column CHECK in ADD COLUMN: both PostgreSQL and SQLite take it without rebuilding
    # the table (SQLite's batch mode would copy dust_accounts and its partial indexes).
    op.execute(
        "ALTER TABLE dust_accounts ADD COLUMN pending BIGINT DEFAULT 0 NOT NULL"
        " CONSTRAINT ck_dust_accounts_pending CHECK (pending >= 0 AND (kind = 'dust'"
        " OR pending = 0))"
    )
    dialect = op.get_bind().dialect.name
    for statement in GUARDS.get(dialect, []):
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in DROP_GUARDS.get(dialect, []):
        op.execute(statement)
    with op.batch_alter_table("dust_accounts") as batch:
        batch.drop_column("pending")
    op.drop_index("ix_dust_lots_pending", table_name="dust_lots")
    op.drop_column("dust_lots", "pending_until")
    op.drop_column("dust_orders", "earn_rules")
    op.drop_column("dust_orders", "earn_multiplier")
    op.drop_index("ix_dust_customer_groups_customer", table_name="dust_customer_groups")
    op.drop_table("dust_customer_groups")
    op.drop_index("ix_dust_earn_rule_changes_rule_id", table_name="dust_earn_rule_changes")
    op.drop_table("dust_earn_rule_changes")
    op.drop_index("ix_dust_earn_rules_starts_at", table_name="dust_earn_rules")
    op.drop_table("dust_earn_rules")
