"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-21 19:50:13.417704
"""

import sqlalchemy as sa
from alembic import op

# Entries are append-only: the database refuses to update or delete them.
APPEND_ONLY = {
    "postgresql": """
        CREATE FUNCTION dust_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'dust_entries is append-only: % refused', TG_OP;
        END $$;
        CREATE TRIGGER dust_entries_append_only BEFORE UPDATE OR DELETE ON dust_entries
            FOR EACH ROW EXECUTE FUNCTION dust_entries_append_only();
    """,
    "sqlite": [
        """CREATE TRIGGER dust_entries_no_update BEFORE UPDATE ON dust_entries
           BEGIN SELECT RAISE(ABORT, 'dust_entries is append-only: UPDATE refused'); END""",
        """CREATE TRIGGER dust_entries_no_delete BEFORE DELETE ON dust_entries
           BEGIN SELECT RAISE(ABORT, 'dust_entries is append-only: DELETE refused'); END""",
    ],
}
DROP_APPEND_ONLY = {
    "postgresql": [
        "DROP TRIGGER IF EXISTS dust_entries_append_only ON dust_entries",
        "DROP FUNCTION IF EXISTS dust_entries_append_only()",
    ],
    "sqlite": [
        "DROP TRIGGER IF EXISTS dust_entries_no_update",
        "DROP TRIGGER IF EXISTS dust_entries_no_delete",
    ],
}


revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dust_accounts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("currency_code", sa.String(length=3), nullable=True),
        sa.Column("code", sa.String(length=40), nullable=True),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(kind = 'dust' AND currency_code IS NULL AND customer_id IS NOT NULL) OR (kind = 'store_credit' AND currency_code IS NOT NULL AND code IS NOT NULL)",
            name=op.f("ck_dust_accounts_kind_fields"),
        ),
        sa.CheckConstraint(
            "kind = 'dust' OR balance >= held", name=op.f("ck_dust_accounts_store_credit_covered")
        ),
        sa.CheckConstraint("kind IN ('dust', 'store_credit')", name=op.f("ck_dust_accounts_kind")),
        sa.CheckConstraint("held >= 0", name=op.f("ck_dust_accounts_held_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dust_accounts")),
        sa.UniqueConstraint("code", name=op.f("uq_dust_accounts_code")),
        sa.UniqueConstraint(
            "customer_id",
            "kind",
            "currency_code",
            name=op.f("uq_dust_accounts_customer_id_kind_currency_code"),
        ),
    )
    op.create_index(
        "uq_dust_accounts_dust_customer",
        "dust_accounts",
        ["customer_id"],
        unique=True,
        postgresql_where=sa.text("kind = 'dust'"),
        sqlite_where=sa.text("kind = 'dust'"),
    )

    op.create_table(
        "dust_event_conflicts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_id", sa.String(length=250), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dust_event_conflicts")),
        sa.UniqueConstraint(
            "event_id", "content_hash", name=op.f("uq_dust_event_conflicts_event_id_content_hash")
        ),
    )
    op.create_index(
        op.f("ix_dust_event_conflicts_event_id"), "dust_event_conflicts", ["event_id"], unique=False
    )

    op.create_table(
        "dust_events",
        sa.Column("event_id", sa.String(length=250), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('processed', 'ignored', 'rejected', 'needs_attention', 'failed')",
            name=op.f("ck_dust_events_status"),
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_dust_events")),
    )
    op.create_index(
        "ix_dust_events_status_received", "dust_events", ["status", "received_at"], unique=False
    )

    op.create_table(
        "dust_orders",
        sa.Column("order_id", sa.String(length=200), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=True),
        sa.Column("cart_id", sa.String(length=200), nullable=True),
        sa.Column("currency_code", sa.String(length=3), nullable=True),
        sa.Column("placed_event_id", sa.String(length=250), nullable=True),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("earn_base", sa.BigInteger(), nullable=False),
        sa.Column("earn_rate", sa.String(length=40), nullable=True),
        sa.Column("dust_total", sa.BigInteger(), nullable=False),
        sa.Column("store_credit_total", sa.BigInteger(), nullable=False),
        sa.Column("charged_dust", sa.BigInteger(), nullable=False),
        sa.Column("charged_store_credit", sa.BigInteger(), nullable=False),
        sa.Column("returned", sa.Boolean(), nullable=False),
        sa.Column("earned", sa.BigInteger(), nullable=False),
        sa.Column("clawed_back", sa.BigInteger(), nullable=False),
        sa.Column("forgiven", sa.BigInteger(), nullable=False),
        sa.Column("canceled", sa.Boolean(), nullable=False),
        sa.Column("canceled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("no_earn_reason", sa.String(length=100), nullable=True),
        sa.CheckConstraint(
            "dust_total >= 0 AND store_credit_total >= 0 AND charged_dust >= 0 AND charged_store_credit >= 0 AND charged_dust <= dust_total AND charged_store_credit <= store_credit_total",
            name=op.f("ck_dust_orders_charges"),
        ),
        sa.CheckConstraint(
            "earned >= 0 AND clawed_back >= 0 AND forgiven >= 0 AND clawed_back + forgiven <= earned",
            name=op.f("ck_dust_orders_earnings"),
        ),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_dust_orders")),
    )
    op.create_index("ix_dust_orders_cart", "dust_orders", ["cart_id"], unique=False)

    op.create_table(
        "dust_products",
        sa.Column("product_id", sa.String(length=200), nullable=False),
        sa.Column("dust_only", sa.Boolean(), nullable=False),
        sa.Column("dust_price", sa.BigInteger(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.String(length=250), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "dust_price IS NULL OR dust_price >= 0", name=op.f("ck_dust_products_dust_price")
        ),
        sa.PrimaryKeyConstraint("product_id", name=op.f("pk_dust_products")),
    )
    op.create_table(
        "dust_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("direction", sa.String(length=6), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("reference_type", sa.String(length=32), nullable=False),
        sa.Column("reference_id", sa.String(length=250), nullable=False),
        sa.Column("idempotency_key", sa.String(length=300), nullable=True),
        sa.Column("event_id", sa.String(length=250), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("memo", sa.Text(), nullable=True),
        sa.Column("forgiven", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "direction IN ('credit', 'debit')", name=op.f("ck_dust_entries_direction")
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_dust_entries_amount_positive")),
        sa.CheckConstraint("forgiven >= 0", name=op.f("ck_dust_entries_forgiven_not_negative")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["dust_accounts.id"],
            name=op.f("fk_dust_entries_account_id_dust_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dust_entries")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_dust_entries_idempotency_key")),
    )
    op.create_index(
        op.f("ix_dust_entries_account_id"), "dust_entries", ["account_id"], unique=False
    )
    statements = APPEND_ONLY[op.get_bind().dialect.name]
    for statement in [statements] if isinstance(statements, str) else statements:
        op.execute(statement)
    op.create_index("ix_dust_entries_created_at", "dust_entries", ["created_at"], unique=False)
    op.create_index(
        "ix_dust_entries_reference",
        "dust_entries",
        ["reference_type", "reference_id"],
        unique=False,
    )

    op.create_table(
        "dust_holds",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("cart_id", sa.String(length=200), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("captured", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("order_id", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status = 'captured' OR captured = 0",
            name=op.f("ck_dust_holds_captured_only_if_captured"),
        ),
        sa.CheckConstraint(
            "status IN ('active', 'captured', 'released', 'expired')",
            name=op.f("ck_dust_holds_status"),
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_dust_holds_amount_positive")),
        sa.CheckConstraint(
            "captured >= 0 AND captured <= amount", name=op.f("ck_dust_holds_captured_range")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["dust_accounts.id"],
            name=op.f("fk_dust_holds_account_id_dust_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dust_holds")),
    )
    op.create_index(op.f("ix_dust_holds_account_id"), "dust_holds", ["account_id"], unique=False)
    op.create_index(
        "ix_dust_holds_active_expiry",
        "dust_holds",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'active'"),
        sqlite_where=sa.text("status = 'active'"),
    )
    op.create_index(op.f("ix_dust_holds_cart_id"), "dust_holds", ["cart_id"], unique=False)
    op.create_index(
        "uq_dust_holds_active_cart",
        "dust_holds",
        ["account_id", "cart_id"],
        unique=True,
        postgresql_where=sa.text("status = 'active'"),
        sqlite_where=sa.text("status = 'active'"),
    )

    op.create_table(
        "dust_lots",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("order_id", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_dust_lots_amount_positive")),
        sa.CheckConstraint(
            "remaining >= 0 AND remaining <= amount", name=op.f("ck_dust_lots_remaining_range")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["dust_accounts.id"], name=op.f("fk_dust_lots_account_id_dust_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["dust_entries.id"], name=op.f("fk_dust_lots_entry_id_dust_entries")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dust_lots")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_dust_lots_entry_id")),
    )
    op.create_index(
        "ix_dust_lots_open",
        "dust_lots",
        ["account_id", "expires_at"],
        unique=False,
        postgresql_where=sa.text("remaining > 0"),
        sqlite_where=sa.text("remaining > 0"),
    )
    op.create_index(
        "ix_dust_lots_open_expiry",
        "dust_lots",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("remaining > 0"),
        sqlite_where=sa.text("remaining > 0"),
    )

    op.create_table(
        "dust_refunds",
        sa.Column("refund_id", sa.String(length=200), nullable=False),
        sa.Column("order_id", sa.String(length=200), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency_code", sa.String(length=3), nullable=False),
        sa.Column("to_store_credit", sa.Boolean(), nullable=False),
        sa.Column("event_id", sa.String(length=250), nullable=False),
        sa.Column(
            "credit_entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_dust_refunds_amount_positive")),
        sa.ForeignKeyConstraint(
            ["credit_entry_id"],
            ["dust_entries.id"],
            name=op.f("fk_dust_refunds_credit_entry_id_dust_entries"),
        ),
        sa.PrimaryKeyConstraint("refund_id", name=op.f("pk_dust_refunds")),
    )
    op.create_index(op.f("ix_dust_refunds_order_id"), "dust_refunds", ["order_id"], unique=False)

    op.create_table(
        "dust_lot_movements",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("lot_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_dust_lot_movements_amount_positive")),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["dust_entries.id"],
            name=op.f("fk_dust_lot_movements_entry_id_dust_entries"),
        ),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["dust_lots.id"], name=op.f("fk_dust_lot_movements_lot_id_dust_lots")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dust_lot_movements")),
    )
    op.create_index(
        op.f("ix_dust_lot_movements_entry_id"), "dust_lot_movements", ["entry_id"], unique=False
    )
    op.create_index(
        op.f("ix_dust_lot_movements_lot_id"), "dust_lot_movements", ["lot_id"], unique=False
    )


def downgrade() -> None:
    for statement in DROP_APPEND_ONLY[op.get_bind().dialect.name]:
        op.execute(statement)
    op.drop_table("dust_lot_movements")
    op.drop_table("dust_refunds")
    op.drop_table("dust_lots")
    op.drop_table("dust_holds")
    op.drop_table("dust_entries")
    op.drop_table("dust_products")
    op.drop_table("dust_orders")
    op.drop_table("dust_events")
    op.drop_table("dust_event_conflicts")
    op.drop_table("dust_accounts")
