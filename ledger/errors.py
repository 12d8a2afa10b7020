"""Business errors of the ledger. Transient database errors are never turned into these."""

from __future__ import annotations


class LedgerError(Exception):
    """A request the ledger refuses; the message is safe to show to an operator."""


class InsufficientFunds(LedgerError):
    def __init__(self, available: int, requested: int) -> None:
        super().__init__(f"insufficient funds: available {available}, requested {requested}")
        self.available = available
        self.requested = requested


class UnknownAccount(LedgerError):
    pass
