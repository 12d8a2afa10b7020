"""Charging an order and giving back: what an order took from its customer's dust and
store credit, and what goes back when it is canceled or refunded.

- :func:`charge`: capture the cart's holds first (soonest-expiring lots first, in the
  journal), then debit the rest if available; a shortfall is reported, never invented.
- :func:`return_charges`: a canceled order's holds released and every charge credited back
  to the lots it was drawn from, less the dust refunds gave back already.
- :func:`settle_refunds`: refunds checked against the order's caps once it is placed
  (money up to ``refund_cap``, dust up to what it charged), dust given back for returned
  items (:func:`give_back_dust`), store credit credited to its owner
  (:func:`settle_refund_credits`).

The earn side of the same facts (earn targets, clawbacks, pending dust) is in
:mod:`dust.ledger.orders`; the formulas in :mod:`dust.ledger.earning`. Lock order as there:
the order row first, then accounts (id order), then holds and lots. Nothing here flushes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from dust.ledger import holds as holds_
from dust.ledger import journal
from dust.ledger.accounts import SPENDS, ensure_account, lock_accounts, open_anonymous_account
from dust.ledger.journal import Ref
from dust.ledger.orders import applied_sums, order_refunds
from dust.models import Account, Entry, Order, Refund
from dust.models.tables import DUST, STORE_CREDIT


@dataclass
class ChargeResult:
    captured: dict[str, int] = field(default_factory=dict)
    debited: dict[str, int] = field(default_factory=dict)
    released: int = 0
    shortfall: dict[str, int] = field(default_factory=dict)


def charge(session: Session, order: Order, event_id: str) -> ChargeResult:
    """Make the ledger match what the order charged: capture the cart's holds first (part
    of a hold larger than the charge is released), then debit the rest if available.
    What cannot be charged is reported as ``shortfall``, never invented."""
    result = ChargeResult()
    session.info.get(SPENDS, {}).pop(order.order_id, None)  # it may charge: read them again
    wanted = {DUST: order.dust_total - order.charged_dust}
    wanted[STORE_CREDIT] = order.store_credit_total - order.charged_store_credit
    mine: dict[str, int] = {}
    if order.customer_id is not None:
        mine[DUST] = ensure_account(session, order.customer_id, DUST)
        if wanted[STORE_CREDIT] > 0 and order.currency_code:
            mine[STORE_CREDIT] = ensure_account(
                session, order.customer_id, STORE_CREDIT, order.currency_code
            )
    accounts, holds = holds_.lock_cart_holds(session, order.cart_id, also_lock=mine.values())
    by_id = {account_id: kind for kind, account_id in mine.items()}
    for hold in holds:
        kind = by_id.get(hold.account_id)
        account = accounts[hold.account_id]
        if kind is None:
            holds_.release_holds(session, accounts, [hold])
            result.released += hold.amount
            continue
        ref = Ref("spend", "order", order.order_id, f"hold:{hold.id}:capture", event_id)
        took = holds_.capture(session, account, hold, wanted[kind], ref, order.order_id)
        wanted[kind] -= took
        result.captured[kind] = result.captured.get(kind, 0) + took
        result.released += hold.amount - took
        _add_charged(order, kind, took)
    for kind, amount in wanted.items():
        if amount <= 0:
            continue
        account_id = mine.get(kind)
        payer = accounts.get(account_id) if account_id is not None else None
        can = max(0, holds_.available(payer)) if payer is not None else 0
        take = min(can, amount)
        if take and payer is not None:
            already = order.charged_dust if kind == DUST else order.charged_store_credit
            key = f"order:{order.order_id}:spend:{kind}:{already}"
            _add_charged(order, kind, take)  # before the entry: in the same flush
            journal.debit(
                session, payer, take, Ref("spend", "order", order.order_id, key, event_id)
            )
            result.debited[kind] = take
        if amount - take:
            result.shortfall[kind] = amount - take
    return result


def _add_charged(order: Order, kind: str, amount: int) -> None:
    if kind == DUST:
        order.charged_dust += amount
    else:
        order.charged_store_credit += amount


def return_charges(session: Session, order: Order, event_id: str) -> int:
    """Canceled order: release its cart's holds and credit back every charge it made, less
    the dust refunds gave back already (dust goes back to the lots it was drawn from).
    Returns the total credited back."""
    spends = [] if order.returned else _spends(session, order.order_id)
    # The cart's hold accounts and the charged accounts, locked in one statement (id order).
    accounts, holds = holds_.lock_cart_holds(
        session, order.cart_id, also_lock={e.account_id for e in spends}
    )
    holds_.release_holds(session, accounts, holds)
    if order.returned:
        return 0
    total = 0
    given_back = order.dust_given_back  # by refunds, from the first dust spends on
    for spend in spends:
        amount = spend.amount
        if accounts[spend.account_id].kind == DUST:
            already = min(given_back, amount)
            given_back -= already
            amount -= already
        if not amount:
            continue
        key = f"order:{order.order_id}:cancel:{spend.id}"
        ref = Ref("cancel", "order", order.order_id, key, event_id)
        journal.credit(session, accounts[spend.account_id], amount, ref, give_back=spend)
        total += amount
    order.returned = True
    return total


def _spends(session: Session, order_id: str, kind: str | None = None) -> list[Entry]:
    """The order's charges (captured holds and debits), oldest first; of one kind if given.
    Read once per deferred block (:func:`load_spends`)."""
    known: dict[str, list[tuple[Entry, str]]] | None = session.info.get(SPENDS)
    if known is None or order_id not in known:
        found = _read_spends(session, [order_id])
    else:
        found = known[order_id]
    return [entry for entry, its_kind in found if kind is None or its_kind == kind]


def _read_spends(session: Session, order_ids: list[str]) -> list[tuple[Entry, str]]:
    journal.write_new(session)  # the session may be clean: no flush would write them
    stmt = (
        select(Entry, Account.kind)
        .join(Account, Account.id == Entry.account_id)
        .where(
            Entry.reference_type == "order",
            Entry.reference_id.in_(order_ids),
            Entry.reason == "spend",
        )
        .order_by(Entry.id)
    )
    return [(entry, kind) for entry, kind in session.execute(stmt)]


def load_spends(session: Session, order_ids: Iterable[str]) -> None:
    """Read the charges of the orders ``order_ids`` (locked) and their lot draws, a
    statement each, for a deferred block (``journal.deferred``) to give back without a
    round trip per event. :func:`charge` forgets an order's, as it adds to them."""
    known: dict[str, list[tuple[Entry, str]]] | None = session.info.get(SPENDS)
    if known is None:
        return
    wanted = sorted(set(order_ids) - set(known))
    if not wanted:
        return
    for order_id in wanted:
        known[order_id] = []
    found = _read_spends(session, wanted)
    for entry, kind in found:
        known[entry.reference_id].append((entry, kind))
    journal.load_draws(session, [entry.id for entry, kind in found if kind == DUST])


@dataclass(frozen=True)
class RefundCredit:
    refund_id: str
    amount: int
    account_code: str | None
    customer_id: str | None


@dataclass
class RefundsSettled:
    """What :func:`settle_refunds` did: store credit posted, refunds held by a cap (id and
    reason, nothing credited for them), dust given back."""

    credits: list[RefundCredit] = field(default_factory=list)
    held: dict[str, str] = field(default_factory=dict)
    dust_returned: int = 0


def settle_refunds(session: Session, order: Order, event_id: str) -> RefundsSettled:
    """Check the order's waiting refunds against its caps once it is placed (arrival order):
    each one either passes (``applied``: its dust is given back now) or is ``held`` with
    the reason, nothing credited. Then credit the store credit of applied refunds.

    Caps (money guards): the applied refunds of an order never add up to more than
    ``order.refund_cap`` in money, nor give back more dust than ``order.dust_total``.
    Nothing is credited for a refund before its order is placed: only then are its caps
    and its owner known.
    """
    settled = RefundsSettled()
    if order.placed_event_id is not None:
        waiting = [r for r in order_refunds(session, order.order_id) if r.status == "waiting"]
        if waiting:
            money, dust = applied_sums(session, order.order_id)
            for refund in waiting:
                reason = _over_cap(order, refund, money, dust)
                if reason is not None:
                    refund.status, refund.held_reason = "held", reason
                    settled.held[refund.refund_id] = reason
                    continue
                refund.status = "applied"
                money += refund.amount
                dust += refund.dust_amount
                settled.dust_returned += give_back_dust(session, order, refund, event_id)
    settled.credits = settle_refund_credits(session, order, event_id)
    return settled


def _over_cap(order: Order, refund: Refund, money: int, dust: int) -> str | None:
    """Why ``refund`` cannot be applied on top of ``money`` and ``dust`` already refunded."""
    if order.refund_cap is not None and money + refund.amount > order.refund_cap:
        return (
            f"refunds of order {order.order_id} would add up to {money + refund.amount},"
            f" more than the {order.refund_cap} it was paid in money and store credit"
        )
    if dust + refund.dust_amount > order.dust_total:
        return (
            f"refunds of order {order.order_id} would give back {dust + refund.dust_amount}"
            f" dust, more than the {order.dust_total} it charged"
        )
    return None


def give_back_dust(session: Session, order: Order, refund: Refund, event_id: str) -> int:
    """Credit an applied refund's ``dust_amount`` back to the lots the order's dust was
    drawn from (as a cancel does), at most the dust the order charged and has not given
    back (a cancel that came first gave it all back). Returns what was credited."""
    amount = (
        0 if order.returned else min(refund.dust_amount, order.charged_dust - order.dust_given_back)
    )
    if amount <= 0:
        return 0
    spends = _spends(session, order.order_id, DUST)
    accounts = lock_accounts(session, {e.account_id for e in spends})
    skip, left = order.dust_given_back, amount
    for spend in spends:
        already = min(skip, spend.amount)
        skip -= already
        take = min(spend.amount - already, left)
        if take:
            key = f"refund:{refund.refund_id}:dust:{spend.id}"
            ref = Ref("return", "refund", refund.refund_id, key, event_id)
            journal.credit(session, accounts[spend.account_id], take, ref, give_back=spend)
            left -= take
        if not left:
            break
    assert not left, f"order {order.order_id}: charged dust not found in its spends"
    order.dust_given_back += amount
    refund.dust_returned = amount
    return amount


def settle_refund_credits(session: Session, order: Order, event_id: str) -> list[RefundCredit]:
    """Credit store credit for every applied to-store-credit refund of the order that has
    not been credited yet and whose owner is known (the refund's customer, else the placed
    order's customer, else, for a placed guest order, a new anonymous account)."""
    pending = [
        r
        for r in order_refunds(session, order.order_id)
        if r.status == "applied" and r.to_store_credit and r.credit_entry_id is None and r.amount
    ]
    credited = []
    for refund in pending:
        customer_id = refund.customer_id or order.customer_id
        if customer_id is not None:
            account_id = ensure_account(session, customer_id, STORE_CREDIT, refund.currency_code)
            account = lock_accounts(session, [account_id])[account_id]
        elif order.placed_event_id is not None:
            account = open_anonymous_account(session, refund.currency_code)
        else:
            continue  # owner not known until the order arrives
        key = f"refund:{refund.refund_id}:store_credit"
        ref = Ref("refund", "refund", refund.refund_id, key, event_id)
        entry = journal.credit(session, account, refund.amount, ref)
        refund.credit_entry_id = entry.id
        credited.append(RefundCredit(refund.refund_id, refund.amount, account.code, customer_id))
    return credited


def refunds_of(session: Session, order_id: str) -> list[dict[str, object]]:
    """The order's refunds as ``dust.order_refunds`` shows them, in arrival order."""
    rows = session.execute(
        select(Refund, Account.code)
        .outerjoin(Entry, Entry.id == Refund.credit_entry_id)
        .outerjoin(Account, Account.id == Entry.account_id)
        .where(Refund.order_id == order_id)
        .order_by(Refund.created_at, Refund.refund_id)
    ).all()
    status = {"waiting": "waiting_for_order", "applied": "applied", "held": "needs_attention"}
    return [
        {
            "refund_id": refund.refund_id,
            "amount": refund.amount,
            "dust_amount": refund.dust_amount,
            "currency_code": refund.currency_code,
            "to_store_credit": refund.to_store_credit,
            "status": status[refund.status],
            "reason": refund.held_reason,
            "code": code,
            "store_credit": refund.amount if refund.credit_entry_id is not None else 0,
            "dust": refund.dust_returned,
        }
        for refund, code in rows
    ]
