"""Opening and locking accounts.

Accounts are opened on demand with ``INSERT … ON CONFLICT DO NOTHING`` so two workers
opening the same account race harmlessly. Several accounts are always locked in one
statement, in id order (``SELECT … FOR UPDATE ORDER BY id``), so two transactions can
never wait on each other's rows in opposite orders.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from dust.models import Account
from dust.models.base import insert_for, utcnow
from dust.models.bulk import insert_rows
from dust.models.tables import DUST, STORE_CREDIT


def new_code() -> str:
    """A store-credit code: 100 random bits, base32, grouped for reading aloud."""
    raw = base64.b32encode(secrets.token_bytes(15)).decode()[:20]
    return "SC-" + "-".join(raw[i : i + 5] for i in range(0, 20, 5))


#: ``session.info`` keys: account ids found or opened, and accounts locked, in this
#: transaction (ids never change; a row lock lasts until the transaction ends), so that
#: one event's steps (charge, earn, refund credit) find and lock an account once.
KNOWN = "dust.accounts.known"
LOCKED = "dust.accounts.locked"
#: Customers all of whose accounts were read into ``KNOWN`` in this transaction.
SCANNED = "dust.accounts.scanned"
#: Accounts this transaction opened: no other transaction has seen them yet.
OPENED = "dust.accounts.opened"
#: ``session.info`` keys of what is known under an order's or account's lock, forgotten
#: with the locks: order rows locked (``dust.ledger.orders.lock_orders``), every refund of a
#: locked order (``dust.ledger.orders.order_refunds``), every active hold of a cart whose
#: holders are locked (``dust.ledger.holds.load_cart_holds``).
LOCKED_ORDERS = "dust.orders.locked"
ORDER_REFUNDS = "dust.orders.refunds"
CART_HOLDS = "dust.holds.carts"
#: Refund ids read and found not recorded (``dust.ledger.orders.find_refund``).
ABSENT_REFUNDS = "dust.refunds.absent"
#: While ``dust.ledger.journal.deferred``: the entry and lot ids handed out ahead, and the
#: lots read of each dust account (``{account_id: journal._OpenLots}``: those with dust
#: left when read, its first ones in draw order or all, and every lot given back to or
#: opened since).
IDS = "dust.journal.ids"
LOTS = "dust.journal.lots"
#: Also while deferred: the charges (``spend`` entries, with their account's kind) of
#: orders read once (``dust.ledger.charging.load_spends``), and the lot draws of those
#: entries with their lots, newest first (``dust.ledger.journal.load_draws``). Entries and
#: their draws never change; an order charged in the block is read again.
SPENDS = "dust.charging.spends"
DRAWS = "dust.journal.draws"


def _insert_ignore(session: Session, values: dict[str, object]) -> int | None:
    """Insert an account unless one conflicts; its id, or None when it was there."""
    insert = insert_for(session)
    stmt = insert(Account.__table__).values(**values).on_conflict_do_nothing()
    # On the session's connection: an account's identity never changes, so the session's
    # unit of work (balances) need not be flushed first, as an ORM statement would.
    return session.connection().execute(stmt.returning(Account.__table__.c.id)).scalar()


def _find(session: Session, customer_id: str, kind: str, currency: str | None) -> int | None:
    A = Account.__table__
    stmt = select(A.c.id).where(A.c.customer_id == customer_id, A.c.kind == kind)
    stmt = stmt.where(
        A.c.currency_code.is_(None) if currency is None else A.c.currency_code == currency
    )
    return session.connection().execute(stmt).scalar()


def ensure_account(
    session: Session, customer_id: str, kind: str, currency: str | None = None
) -> int:
    """The id of the customer's account of ``kind`` (and currency), opening it if needed."""
    currency = None if kind == DUST else (currency or "").lower()
    known = session.info.setdefault(KNOWN, {})
    if (customer_id, kind, currency) in known:
        return known[customer_id, kind, currency]
    # A customer whose accounts were all read in this transaction has none of this kind:
    # straight to the insert.
    scanned = customer_id in session.info.get(SCANNED, ())
    account_id = None if scanned else _find(session, customer_id, kind, currency)
    if account_id is None:
        account_id = _insert_ignore(
            session,
            {
                "customer_id": customer_id,
                "kind": kind,
                "currency_code": currency,
                "code": new_code() if kind == STORE_CREDIT else None,
                "balance": 0,
                "held": 0,
                "created_at": utcnow(),
            },
        )
        if account_id is not None:
            session.info.setdefault(OPENED, set()).add(account_id)
        else:
            account_id = _find(session, customer_id, kind, currency)
        assert account_id is not None, "account vanished after insert"
    known[customer_id, kind, currency] = account_id
    return account_id


def lock_dust_accounts(session: Session, customer_ids: Iterable[str]) -> dict[str, Account]:
    """The dust accounts of ``customer_ids``, opened where missing and locked (one
    statement, id order), freshly read: :func:`ensure_account` and :func:`lock_accounts`
    for many customers at once, in one round trip when every account exists."""
    wanted = list(dict.fromkeys(customer_ids))  # first-seen order: accounts open in it
    if not wanted:
        return {}
    known = session.info.get(KNOWN, {})
    locked: dict[int, Account] = session.info.get(LOCKED, {})
    ids = [known.get((c, DUST, None)) for c in wanted]
    if all(i is not None and i in locked for i in ids):  # locked earlier: still current
        return {c: locked[i] for c, i in zip(wanted, ids, strict=True) if i is not None}

    def lock() -> dict[str, Account]:
        stmt = (
            select(Account)
            .where(Account.kind == DUST, Account.customer_id.in_(wanted))
            .order_by(Account.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return {account.customer_id: account for account in session.scalars(stmt)}

    found = lock()
    if missing := [c for c in wanted if c not in found]:
        now = utcnow()
        rows = [
            {"customer_id": c, "kind": DUST, "currency_code": None, "code": None}
            | {"balance": 0, "held": 0, "created_at": now}
            for c in missing
        ]
        insert_rows(session, Account.__table__, rows, skip_conflicts=True)
        found = lock()
        if missing := [c for c in wanted if c not in found]:
            raise AssertionError(f"dust accounts vanished after insert: {missing}")
    session.info.setdefault(KNOWN, {}).update({(c, DUST, None): a.id for c, a in found.items()})
    session.info.setdefault(LOCKED, {}).update({a.id: a for a in found.values()})
    return {c: found[c] for c in wanted}


def open_accounts(session: Session, customer_ids: Iterable[str], currency: str | None) -> None:
    """Open, in one statement, the dust account of each customer and (with ``currency``)
    its store-credit account in that currency, where missing: what :func:`ensure_account`
    does for each in turn, in the same order (a customer's dust account, then its store
    credit; ``INSERT … ON CONFLICT DO NOTHING``, so a concurrent opening races harmlessly)."""
    now = utcnow()
    rows: list[dict[str, object]] = []
    for customer_id in dict.fromkeys(customer_ids):
        rows.append(
            {"customer_id": customer_id, "kind": DUST, "currency_code": None, "code": None}
            | {"balance": 0, "held": 0, "created_at": now}
        )
        if currency:
            rows.append(
                {"customer_id": customer_id, "kind": STORE_CREDIT}
                | {"currency_code": currency.lower(), "code": new_code()}
                | {"balance": 0, "held": 0, "created_at": now}
            )
    insert_rows(session, Account.__table__, rows, skip_conflicts=True)


def lock_existing_accounts(
    session: Session, customer_ids: Iterable[str], *, skip_locked: bool = False
) -> set[str]:
    """Lock the accounts that exist of ``customer_ids``, of every kind (one statement, id
    order), so that :func:`ensure_account` and :func:`lock_accounts` find them locked later
    in the transaction without a round trip. Opens none: a missing account is opened when
    an event needs it, in the order the events open accounts one at a time.
    ``skip_locked`` (PostgreSQL): an account another transaction holds is skipped, not
    waited for; returns the customers with such an account (a second statement reads
    which accounts exist), whose accounts the transaction must then leave alone."""
    # Customers whose accounts were locked earlier in the transaction: still locked.
    wanted = set(customer_ids) - session.info.get(SCANNED, set())
    if not wanted:
        return set()
    stmt = (
        select(Account)
        .where(Account.customer_id.in_(wanted))
        .order_by(Account.id)
        .with_for_update(skip_locked=skip_locked)
        .execution_options(populate_existing=True)
    )
    found = list(session.scalars(stmt))
    busy: set[str] = set()
    if skip_locked:
        mine = {a.id for a in found}
        exist = select(Account.id, Account.customer_id).where(Account.customer_id.in_(wanted))
        busy = {c for i, c in session.execute(exist) if i not in mine and c is not None}
    known = session.info.setdefault(KNOWN, {})
    known.update({(a.customer_id, a.kind, a.currency_code): a.id for a in found})
    session.info.setdefault(LOCKED, {}).update({a.id: a for a in found})
    session.info.setdefault(SCANNED, set()).update(wanted - busy)
    return busy


def open_anonymous_account(session: Session, currency: str) -> Account:
    """A new store-credit account with no customer, identified by its code only."""
    account = Account(
        customer_id=None,
        kind=STORE_CREDIT,
        currency_code=currency.lower(),
        code=new_code(),
        balance=0,
        held=0,
        created_at=utcnow(),
    )
    session.add(account)
    session.flush()
    session.info.setdefault(LOCKED, {})[account.id] = account  # new: no one else sees it
    session.info.setdefault(OPENED, set()).add(account.id)
    return account


def lock_accounts(session: Session, ids: Iterable[int]) -> dict[int, Account]:
    """Lock the accounts ``ids`` (in id order) and return them freshly read."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    locked: dict[int, Account] = session.info.setdefault(LOCKED, {})
    missing = [account_id for account_id in wanted if account_id not in locked]
    if not missing:  # locked earlier: still current
        return {account_id: locked[account_id] for account_id in wanted}
    stmt = (
        select(Account)
        .where(Account.id.in_(missing))
        .order_by(Account.id)
        .with_for_update()
        # In a deferred block (dust.ledger.journal) the accounts changed are all locked,
        # and only those not locked are read again: nothing the session holds is lost
        # without the flush an ORM statement makes first.
        .execution_options(populate_existing=True, autoflush=IDS not in session.info)
    )
    found = {account.id: account for account in session.scalars(stmt)}
    if set(missing) - set(found):
        raise LookupError(f"accounts not found: {sorted(set(missing) - set(found))}")
    locked.update(found)  # kept here too: the session's identity map holds objects weakly
    return {account_id: locked[account_id] for account_id in wanted}


def forget_locks(session: Session) -> None:
    """After a rollback to a savepoint: the accounts opened and the row locks taken since
    it are gone, so what this session remembers of them is forgotten too, and the locked
    accounts are read again when next used (a balance they show may have been undone)."""
    session.info.pop(KNOWN, None)
    session.info.pop(SCANNED, None)
    session.info.pop(OPENED, None)
    for account in session.info.pop(LOCKED, {}).values():
        session.expire(account)
    for order in session.info.pop(LOCKED_ORDERS, {}).values():
        session.expire(order)
    session.info.pop(ORDER_REFUNDS, None)
    session.info.pop(CART_HOLDS, None)
    session.info.pop(ABSENT_REFUNDS, None)
    for key in (LOTS, SPENDS, DRAWS):
        if key in session.info:
            session.info[key] = {}


def customer_accounts(session: Session, customer_id: str) -> list[Account]:
    """All accounts of a customer, dust first, then store credit by currency."""
    stmt = select(Account).where(Account.customer_id == customer_id)
    accounts = list(session.scalars(stmt))
    return sorted(accounts, key=lambda a: (a.kind != DUST, a.currency_code or ""))
