"""The tables. Each CHECK / UNIQUE here is a rule the database enforces on its own.

Invariants that need more than one row (cached balance == journal, lots == balance) are
kept by ``ledger`` and proven by reconciliation.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from dust.models.base import Base, BigId, UTCDateTime, utcnow

DUST = "dust"
STORE_CREDIT = "store_credit"


#: ``dust_accounts.groups_*``: all three set or none, and on a dust account only.
GROUPS_COPY = (
    "(groups_at IS NULL AND groups_event_id IS NULL AND group_ids IS NULL)"
    " OR (kind = 'dust' AND groups_at IS NOT NULL AND groups_event_id IS NOT NULL"
    " AND group_ids IS NOT NULL)"
)


class Account(Base):
    """A dust account (one per customer) or a store-credit account (one per customer and
    currency; ``customer_id`` is null for an anonymous account, found by its ``code``)."""

    __tablename__ = "dust_accounts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    currency_code: Mapped[str | None] = mapped_column(String(3))
    code: Mapped[str | None] = mapped_column(String(40), unique=True)
    #: Cached posted balance: Σ credits − Σ debits of this account's entries.
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Cached total of this account's active holds.
    held: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Cached Σ remaining of the account's pending lots (``dust_lots.pending_until`` set):
    #: in the balance, not available. Always 0 for store credit.
    pending: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: A copy of the customer's latest group record (``dust_customer_groups``, the last in
    #: ``(occurred_at, event_id)`` order), kept by ``dust.ledger.rules.record_groups`` under
    #: this row's lock; null: no group record. An order placed at or after ``groups_at``
    #: reads its groups here, with the lock it takes anyway; only an earlier one reads the
    #: history. Dust accounts only.
    groups_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    groups_event_id: Mapped[str | None] = mapped_column(String(250))
    group_ids: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("kind IN ('dust', 'store_credit')", name="kind"),
        CheckConstraint(
            "(kind = 'dust' AND currency_code IS NULL AND customer_id IS NOT NULL)"
            " OR (kind = 'store_credit' AND currency_code IS NOT NULL AND code IS NOT NULL)",
            name="kind_fields",
        ),
        CheckConstraint("held >= 0", name="held_not_negative"),
        CheckConstraint("pending >= 0 AND (kind = 'dust' OR pending = 0)", name="pending"),
        CheckConstraint(GROUPS_COPY, name="groups"),
        # Store credit is money: its available balance can never go below zero. Dust may
        # go into debt through a clawback (DUST_CLAWBACK_POLICY=debt), never by spending.
        CheckConstraint("kind = 'dust' OR balance >= held", name="store_credit_covered"),
        UniqueConstraint("customer_id", "kind", "currency_code"),
        # NULL currency_code escapes the UNIQUE above, so dust gets its own.
        Index(
            "uq_dust_accounts_dust_customer",
            "customer_id",
            unique=True,
            postgresql_where=text("kind = 'dust'"),
            sqlite_where=text("kind = 'dust'"),
        ),
    )


class Entry(Base):
    """One immutable journal line. Never updated, never deleted (triggers refuse both)."""

    __tablename__ = "dust_entries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("dust_accounts.id"), index=True)
    direction: Mapped[str] = mapped_column(String(6))
    amount: Mapped[int] = mapped_column(BigInteger)
    #: The account's balance right after this entry (makes history and audits cheap).
    balance_after: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(32))
    reference_type: Mapped[str] = mapped_column(String(32))
    reference_id: Mapped[str] = mapped_column(String(250))
    #: A key that may be posted only once (e.g. ``order:o1:earn``); null when not needed.
    idempotency_key: Mapped[str | None] = mapped_column(String(300), unique=True)
    event_id: Mapped[str | None] = mapped_column(String(250))
    actor: Mapped[str | None] = mapped_column(String(200))
    memo: Mapped[str | None] = mapped_column(Text)
    #: Clawback policy ``clamp``: what was owed but not taken.
    forgiven: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("direction IN ('credit', 'debit')", name="direction"),
        CheckConstraint("forgiven >= 0", name="forgiven_not_negative"),
        Index("ix_dust_entries_reference", "reference_type", "reference_id"),
        Index("ix_dust_entries_created_at", "created_at"),
    )


class Hold(Base):
    """A reservation of part of an account's balance for a cart (two-phase transfer)."""

    __tablename__ = "dust_holds"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("dust_accounts.id"), index=True)
    cart_id: Mapped[str] = mapped_column(String(200), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    #: Part of ``amount`` turned into a debit; the rest was released with it.
    captured: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(10), default="active")
    order_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("captured >= 0 AND captured <= amount", name="captured_range"),
        CheckConstraint("status IN ('active', 'captured', 'released', 'expired')", name="status"),
        CheckConstraint("status = 'captured' OR captured = 0", name="captured_only_if_captured"),
        Index(
            "uq_dust_holds_active_cart",
            "account_id",
            "cart_id",
            unique=True,
            postgresql_where=text("status = 'active'"),
            sqlite_where=text("status = 'active'"),
        ),
        Index(
            "ix_dust_holds_active_expiry",
            "expires_at",
            postgresql_where=text("status = 'active'"),
            sqlite_where=text("status = 'active'"),
        ),
    )


class Lot(Base):
    """Dust earned at one time, with its own expiry; consumed soonest-expiring first."""

    __tablename__ = "dust_lots"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("dust_accounts.id"))
    entry_id: Mapped[int] = mapped_column(ForeignKey("dust_entries.id"), unique=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    #: Null: never expires (DUST_POINTS_TTL_DAYS=0).
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    order_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: Set while the lot is pending (DUST_PENDING_DAYS): its remaining dust is in the
    #: balance but not available until this instant; null once released (or never pending).
    pending_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("remaining >= 0 AND remaining <= amount", name="remaining_range"),
        Index(
            "ix_dust_lots_pending",
            "pending_until",
            "account_id",
            postgresql_where=text("pending_until IS NOT NULL"),
            sqlite_where=text("pending_until IS NOT NULL"),
        ),
        Index(
            "ix_dust_lots_open",
            "account_id",
            "expires_at",
            postgresql_where=text("remaining > 0"),
            sqlite_where=text("remaining > 0"),
        ),
        Index(
            "ix_dust_lots_open_expiry",
            "expires_at",
            postgresql_where=text("remaining > 0"),
            sqlite_where=text("remaining > 0"),
        ),
    )


class LotMovement(Base):
    """Which lots an entry drew from (debit) or gave back to (credit), and how much."""

    __tablename__ = "dust_lot_movements"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("dust_entries.id"), index=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("dust_lots.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (CheckConstraint("amount > 0", name="amount_positive"),)


class Event(Base):
    """The inbox: one row per envelope id, written in the same transaction as its effects."""

    __tablename__ = "dust_events"

    event_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    #: sha256 of the envelope as received: same id + other content = conflict.
    content_hash: Mapped[str] = mapped_column(String(64))
    envelope: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    #: JSON: what the subscriber did (captured, earned, shortfall, store-credit codes, ...).
    detail: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=1)

    __table_args__ = (
        CheckConstraint(
            "status IN ('processed', 'ignored', 'rejected', 'needs_attention', 'failed',"
            " 'resolved')",
            name="status",
        ),
        Index("ix_dust_events_status_received", "status", "received_at"),
    )


class EventResolution(Base):
    """An admin's closing of a ``needs_attention`` or ``failed`` event (``dust events
    resolve``): who, why, what it was, and the correcting entry if one was posted."""

    __tablename__ = "dust_event_resolutions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("dust_events.event_id"), unique=True)
    previous_status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(200))
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("dust_entries.id"))
    resolved_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EventConflict(Base):
    """An envelope refused because its id was already used by different content."""

    __tablename__ = "dust_event_conflicts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(250), index=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    envelope: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("event_id", "content_hash"),)


class Order(Base):
    """What one order has done to the ledger, so every event of it converges
    (docs/CONTRACT.md §3.2).

    A row exists as soon as any event of the order arrives; ``placed_event_id`` is set once
    ``order.placed`` has been applied.
    """

    __tablename__ = "dust_orders"

    order_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    customer_id: Mapped[str | None] = mapped_column(String(200))
    cart_id: Mapped[str | None] = mapped_column(String(200))
    currency_code: Mapped[str | None] = mapped_column(String(3))
    placed_event_id: Mapped[str | None] = mapped_column(String(250))
    placed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The earning base before refunds (``dust.ledger.earning.earn_base``; may be negative,
    #: floored when used).
    earn_base: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Rate in force when the order was placed (decimal string), reused by clawbacks.
    earn_rate: Mapped[str | None] = mapped_column(String(40))
    #: Product of the earn rules' multipliers the order earns with, capped (decimal
    #: string; null: 1, no rule applied). Reused by clawbacks; derived again only when a
    #: group change of the customer changes which rules applied at ``placed_at``.
    earn_multiplier: Mapped[str | None] = mapped_column(String(40))
    #: JSON list of the ids of those rules (null: none).
    earn_rules: Mapped[str | None] = mapped_column(Text)
    dust_total: Mapped[int] = mapped_column(BigInteger, default=0)
    store_credit_total: Mapped[int] = mapped_column(BigInteger, default=0)
    charged_dust: Mapped[int] = mapped_column(BigInteger, default=0)
    charged_store_credit: Mapped[int] = mapped_column(BigInteger, default=0)
    returned: Mapped[bool] = mapped_column(Boolean, default=False)
    earned: Mapped[int] = mapped_column(BigInteger, default=0)
    clawed_back: Mapped[int] = mapped_column(BigInteger, default=0)
    forgiven: Mapped[int] = mapped_column(BigInteger, default=0)
    canceled: Mapped[bool] = mapped_column(Boolean, default=False)
    canceled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Why a placed order earned nothing (guest, zero base, canceled), for reconciliation.
    no_earn_reason: Mapped[str | None] = mapped_column(String(100))
    #: Most its money refunds may add up to (``dust.ledger.earning.refund_cap``); null until
    #: placed, and for orders placed before the cap was recorded (no cap known).
    refund_cap: Mapped[int | None] = mapped_column(BigInteger)
    #: Charged dust given back by refunds (returns of items paid with dust).
    dust_given_back: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    __table_args__ = (
        CheckConstraint(
            "dust_total >= 0 AND store_credit_total >= 0 AND charged_dust >= 0"
            " AND charged_store_credit >= 0 AND charged_dust <= dust_total"
            " AND charged_store_credit <= store_credit_total",
            name="charges",
        ),
        CheckConstraint(
            "earned >= 0 AND clawed_back >= 0 AND forgiven >= 0"
            " AND clawed_back + forgiven <= earned",
            name="earnings",
        ),
        CheckConstraint(
            "dust_given_back >= 0 AND dust_given_back <= charged_dust"
            " AND (refund_cap IS NULL OR refund_cap >= 0)",
            name="given_back",
        ),
        Index("ix_dust_orders_cart", "cart_id"),
    )


#: A refund waits for its order (``waiting``), then passes the order's caps (``applied``)
#: or is held for an admin with nothing credited (``held``).
REFUND_STATUSES = ("waiting", "applied", "held")


class Refund(Base):
    """A refund of an order, remembered even when it arrives before the order."""

    __tablename__ = "dust_refunds"

    refund_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(200), index=True)
    customer_id: Mapped[str | None] = mapped_column(String(200))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency_code: Mapped[str] = mapped_column(String(3))
    to_store_credit: Mapped[bool] = mapped_column(Boolean)
    event_id: Mapped[str] = mapped_column(String(250))
    #: The store-credit entry once posted (null until the customer is known).
    credit_entry_id: Mapped[int | None] = mapped_column(ForeignKey("dust_entries.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: Dust given back for returned items paid with dust (what the refund asked).
    dust_amount: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    #: Dust actually credited back for it (less when a cancel gave it back first).
    dust_returned: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    status: Mapped[str] = mapped_column(String(10), default="waiting", server_default="applied")
    #: Why it is ``held``.
    held_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint(
            "amount >= 0 AND dust_amount >= 0 AND amount + dust_amount > 0", name="amounts"
        ),
        CheckConstraint("dust_returned >= 0 AND dust_returned <= dust_amount", name="returned"),
        CheckConstraint("status IN ('waiting', 'applied', 'held')", name="status"),
    )


class Product(Base):
    """A product's dust settings (latest ``occurred_at`` wins)."""

    __tablename__ = "dust_products"

    product_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    dust_only: Mapped[bool] = mapped_column(Boolean, default=False)
    dust_price: Mapped[int | None] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    event_id: Mapped[str | None] = mapped_column(String(250))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (CheckConstraint("dust_price IS NULL OR dust_price >= 0", name="dust_price"),)


class EarnRule(Base):
    """An earn rule (group multiplier, campaign, welcome bonus) in force from ``starts_at``
    (inclusive) to ``ends_at`` (exclusive; null: open). Rows are never deleted and their
    terms never change (triggers refuse both); ``ends_at`` may only be set or brought
    earlier, by ``dust rules end``. Every change is in ``dust_earn_rule_changes``."""

    __tablename__ = "dust_earn_rules"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    group_id: Mapped[str | None] = mapped_column(String(200))
    #: Decimal string, > 0 and <= 100 (group multipliers and campaigns).
    multiplier: Mapped[str | None] = mapped_column(String(40))
    #: Dust credited (welcome bonus).
    amount: Mapped[int | None] = mapped_column(BigInteger)
    #: Only orders in this currency (null: any).
    currency_code: Mapped[str | None] = mapped_column(String(3))
    name: Mapped[str | None] = mapped_column(String(200))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("kind IN ('group_multiplier', 'campaign', 'welcome_bonus')", name="kind"),
        CheckConstraint(
            "(kind = 'group_multiplier' AND group_id IS NOT NULL AND multiplier IS NOT NULL"
            " AND amount IS NULL)"
            " OR (kind = 'campaign' AND group_id IS NULL AND multiplier IS NOT NULL"
            " AND amount IS NULL)"
            " OR (kind = 'welcome_bonus' AND group_id IS NULL AND multiplier IS NULL"
            " AND amount > 0 AND currency_code IS NULL)",
            name="kind_fields",
        ),
        CheckConstraint("ends_at IS NULL OR ends_at >= starts_at", name="window"),
        Index("ix_dust_earn_rules_starts_at", "starts_at"),
    )


class EarnRuleChange(Base):
    """The audit trail of the earn rules: who added or ended which rule, when and why.
    Append-only (triggers refuse updates and deletes)."""

    __tablename__ = "dust_earn_rule_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("dust_earn_rules.id"), index=True)
    action: Mapped[str] = mapped_column(String(10))
    #: The rule's ``ends_at`` before and after this change.
    ends_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ends_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (CheckConstraint("action IN ('add', 'end')", name="action"),)


class CustomerGroups(Base):
    """A customer's groups as one ``customer.created`` / ``customer.updated`` stated them at
    ``occurred_at``. The groups at an instant are those of the latest record at or before
    it (ties: the greater event id), so a late or out-of-order update counts by time."""

    __tablename__ = "dust_customer_groups"

    event_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(200))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: JSON list of group ids, sorted (empty: in no group).
    group_ids: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_dust_customer_groups_customer", "customer_id", "occurred_at"),)
