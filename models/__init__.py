"""Dust's tables (SQLAlchemy 2, typed). Constraints only; behaviour lives in ``ledger``.

Every table is prefixed ``dust_``. ``docs/SCHEMA.md`` describes them for report writers.
"""

from dust.models.base import Base
from dust.models.jobs import Backfill, BackfillBatch, JobRun, Reconciliation
from dust.models.tables import (
    Account,
    CustomerGroups,
    EarnRule,
    EarnRuleChange,
    Entry,
    Event,
    EventConflict,
    EventResolution,
    Hold,
    Lot,
    LotMovement,
    Order,
    Product,
    Refund,
)

__all__ = [
    "Account",
    "CustomerGroups",
    "EarnRule",
    "EarnRuleChange",
    "Backfill",
    "BackfillBatch",
    "JobRun",
    "Reconciliation",
    "Base",
    "Entry",
    "Event",
    "EventConflict",
    "EventResolution",
    "Hold",
    "Lot",
    "LotMovement",
    "Order",
    "Product",
    "Refund",
]
