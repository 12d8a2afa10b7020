"""Admin corrections and claims: new entries with a reason and an actor, never rewrites."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dust.ledger import journal
from dust.ledger.accounts import ensure_account, lock_accounts
from dust.ledger.errors import LedgerError, UnknownAccount
from dust.ledger.journal import Ref
from dust.models import Account, Entry
from dust.models.tables import DUST, STORE_CREDIT


def adjust(
    session: Session,
    *,
    customer_id: str,
    direction: str,
    amount: int,
    kind: str,
    currency: str | None,
    memo: str,
    actor: str,
    idempotency_key: str | None = None,
    expires_at: object = None,
) -> Entry:
    """Post an admin ``credit`` or ``debit``. A debit never overdraws the available
    balance. With ``idempotency_key``, a repeat of the same request returns the first entry."""
    if not memo or not memo.strip():
        raise LedgerError("a reason is required")
    if not actor:
        raise LedgerError("an actor is required")
    if kind == STORE_CREDIT and not currency:
        raise LedgerError("store credit needs a currency")
    key = f"admin:{idempotency_key}" if idempotency_key else None
    if key is not None:
        done = session.scalar(select(Entry).where(Entry.idempotency_key == key))
        if done is not None:
            return done
    account_id = ensure_account(session, customer_id, kind, currency if kind != DUST else None)
    account = lock_accounts(session, [account_id])[account_id]
    ref = Ref("adjustment", "admin", actor, key, actor=actor, memo=memo.strip())
    if direction == "credit":
        return journal.credit(session, account, amount, ref, expires_at=expires_at)  # type: ignore[arg-type]
    return journal.debit(session, account, amount, ref)


def claim(session: Session, code: str, customer_id: str, actor: str) -> Entry | None:
    """Move an anonymous store-credit account's whole available balance to the customer's
    account in the same currency, in one transaction. Returns the credit entry (None when
    there was nothing to move)."""
    anonymous = session.scalar(select(Account).where(Account.code == code))
    if anonymous is None:
        raise UnknownAccount(f"no account with code {code}")
    if anonymous.customer_id is not None:
        raise LedgerError(f"account {code} already belongs to a customer")
    currency = anonymous.currency_code
    target_id = ensure_account(session, customer_id, STORE_CREDIT, currency)
    accounts = lock_accounts(session, [anonymous.id, target_id])
    source, target = accounts[anonymous.id], accounts[target_id]
    # Checked under the lock, so two claims of one code cannot both pass.
    claimed_by = _claimed_by(session, source, code)
    if claimed_by is not None:
        raise LedgerError(f"account {code} was already claimed by {claimed_by}")
    amount = source.balance - source.held
    if amount <= 0:
        return None
    ref = Ref("claim", "claim", code, actor=actor, memo=f"claimed by {customer_id}")
    journal.debit(session, source, amount, ref)
    return journal.credit(session, target, amount, ref)


def _claimed_by(session: Session, account: Account, code: str) -> str | None:
    """The customer an anonymous account was claimed by, or None if it never was.

    An anonymous account stays anonymous after a claim (the customer's own account in that
    currency receives the balance), so the claim is recognised by its debit entry."""
    claimed = session.scalar(
        select(Entry.id)
        .where(Entry.account_id == account.id, Entry.reason == "claim", Entry.direction == "debit")
        .limit(1)
    )
    if claimed is None:
        return None
    customer_id = session.scalar(
        select(Account.customer_id)
        .join(Entry, Entry.account_id == Account.id)
        .where(
            Entry.reference_type == "claim",
            Entry.reference_id == code,
            Entry.direction == "credit",
        )
        .limit(1)
    )
    return customer_id or "another customer"
