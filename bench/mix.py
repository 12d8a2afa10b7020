"""A store's event stream for the benchmarks: the mix of event kinds a real store sends,
and the state it finds (customers holding balances, orders placed before, carts held).

Deterministic: the same ``seed`` gives the same events, ids and amounts. Used by
``bench/e2e.py`` (``--mix``, ``--only``, ``--hot-customer``, ``--workers``).

Kinds of event (``KINDS``) and what each is in the stream:

* ``plain``: a new ``order.placed`` that charges nothing;
* ``charges``: a new ``order.placed`` charging 100-499 dust, whose cart holds that dust
  (reserved beforehand, as the checkout does);
* ``refunds``: a ``refund.created`` of 1,000-4,999 of an order placed beforehand, every
  other one to store credit;
* ``cancels``: an ``order.canceled`` of an order placed beforehand;
* ``customers``: a ``customer.created`` of a new customer (every other one in a group).

Before the measured load (not counted): every customer (``cus_0`` … ``cus_<C-1>``) holds
1,000,000 dust in one lot and 100,000 usd of store credit (admin credits, through the
ledger); the orders the refunds and cancels name are placed; the charging orders' carts
hold their dust. With ``hot_share``, that share of the events (orders, and the placed orders
refunded or canceled) is of one customer, ``cus_0``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

OCCURRED_AT = "2026-11-20T10:00:00Z"
KINDS = ("plain", "charges", "refunds", "cancels", "customers")
#: The issue's mix: 60 % new plain orders, 15 % orders charging dust, 15 % refunds (half
#: to store credit), 5 % cancels, 5 % new customers.
MIX = {"plain": 0.60, "charges": 0.15, "refunds": 0.15, "cancels": 0.05, "customers": 0.05}
DUST_GRANT = 1_000_000
STORE_CREDIT_GRANT = 100_000
HOT = "cus_0"


@dataclass
class Stream:
    """The measured events (``envelopes``, ids ``evt_<tag>…``) and what must exist first."""

    tag: str
    envelopes: list[dict[str, Any]] = field(default_factory=list)
    #: ``order.placed`` applied before the load (ids ``pre_<tag>…``): the orders refunded
    #: or canceled.
    prior: list[dict[str, Any]] = field(default_factory=list)
    #: ``(customer_id, cart_id, dust)`` reserved before the load.
    holds: list[tuple[str, str, int]] = field(default_factory=list)
    #: How many events of each kind.
    kinds: dict[str, int] = field(default_factory=dict)


def envelope(event_id: str, name: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"id": event_id, "name": name, "occurred_at": OCCURRED_AT, "data": data}


def order_data(
    order_id: str, customer_id: str | None, cart_id: str, o: int, dust: int = 0
) -> dict[str, Any]:
    return {
        "id": order_id,
        "customer_id": customer_id,
        "cart_id": cart_id,
        "currency_code": "usd",
        "total": 10999 + o % 1000,
        "shipping_total": 999,
        "dust_total": dust,
        "items": [{"id": f"item_{order_id}", "product_id": "prod_1", "total": 10000 + o % 1000}],
    }


def plan(n: int, shares: dict[str, float], rng: random.Random) -> list[str]:
    """``n`` kinds in the given shares (exact counts, the rest plain), shuffled."""
    kinds: list[str] = []
    for kind in KINDS:
        if kind != "plain":
            kinds += [kind] * round(n * shares.get(kind, 0.0))
    kinds = kinds[:n]
    kinds += ["plain"] * (n - len(kinds))
    rng.shuffle(kinds)
    return kinds


def generate(
    tag: str,
    n: int,
    shares: dict[str, float],
    customers: int,
    seed: int,
    hot_share: float = 0.0,
) -> Stream:
    """``n`` events of the kinds in ``shares`` for ``customers`` customers."""
    rng = random.Random(f"{seed}:{tag}")
    stream = Stream(tag)

    def customer() -> str:
        if hot_share and rng.random() < hot_share:
            return HOT
        return f"cus_{rng.randrange(customers)}"

    for i, kind in enumerate(plan(n, shares, rng)):
        stream.kinds[kind] = stream.kinds.get(kind, 0) + 1
        if kind == "plain":
            order = f"order_{tag}{i}"
            data = order_data(order, customer(), f"cart_{tag}{i}", i)
            stream.envelopes.append(envelope(f"evt_{tag}o{i}", "order.placed", data))
        elif kind == "charges":
            order, cart, dust = f"order_{tag}{i}", f"cart_{tag}{i}", 100 + rng.randrange(400)
            who = customer()
            stream.holds.append((who, cart, dust))
            data = order_data(order, who, cart, i, dust)
            stream.envelopes.append(envelope(f"evt_{tag}q{i}", "order.placed", data))
        elif kind in ("refunds", "cancels"):
            order, who = f"order_{tag}p{i}", customer()
            prior = order_data(order, who, f"cart_{tag}p{i}", i)
            stream.prior.append(envelope(f"pre_{tag}{i}", "order.placed", prior))
            if kind == "refunds":
                refund = {
                    "id": f"ref_{tag}{i}",
                    "order_id": order,
                    "customer_id": who,
                    "amount": 1000 + rng.randrange(4000),
                    "currency_code": "usd",
                    "to_store_credit": i % 2 == 0,
                }
                stream.envelopes.append(envelope(f"evt_{tag}r{i}", "refund.created", refund))
            else:
                stream.envelopes.append(envelope(f"evt_{tag}x{i}", "order.canceled", {"id": order}))
        else:  # customers
            data: dict[str, Any] = {"id": f"cus_{tag}n{i}", "email": f"n{i}@{tag}.example"}
            if i % 2:
                data["group_ids"] = ["vip"]
            stream.envelopes.append(envelope(f"evt_{tag}c{i}", "customer.created", data))
    return stream


def shares_for(mix: bool, only: str | None) -> dict[str, float]:
    if mix:
        return dict(MIX)
    return {only or "plain": 1.0}


# -- the state the stream finds (imports Dust: DUST_DATABASE_URL must be set) ----------------


def prepare(customers: int, streams: list[Stream], batch: int = 500) -> None:
    """Balances of every customer, then each stream's prior orders and holds, through the
    ledger's own functions (entries, lots and holds as the live paths write them)."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    from dust.ledger import holds, journal
    from dust.ledger.accounts import lock_accounts, lock_dust_accounts
    from dust.ledger.journal import Ref
    from dust.models import Account
    from dust.models.bulk import insert_rows
    from dust.models.tables import STORE_CREDIT
    from dust.tasks import inbox
    from dust.worker.db import session_scope

    ids = [f"cus_{c}" for c in range(customers)]
    now = datetime.now(UTC)
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        with session_scope() as session:
            dust = lock_dust_accounts(session, chunk)
            rows = [
                {"customer_id": c, "kind": STORE_CREDIT, "currency_code": "usd"}
                | {"code": f"SC-BENCH-{c}", "balance": 0, "held": 0, "created_at": now}
                for c in chunk
            ]
            insert_rows(session, Account.__table__, rows, skip_conflicts=True)
            credit_ids = session.scalars(
                text(
                    "SELECT id FROM dust_accounts WHERE kind = 'store_credit'"
                    " AND customer_id = ANY(:c)"
                ),
                {"c": chunk},
            ).all()
            credit = lock_accounts(session, credit_ids)
            credits = [
                journal.Credit(
                    dust[c], DUST_GRANT, Ref("adjustment", "admin", "bench", f"admin:bench-{c}")
                )
                for c in chunk
            ] + [
                journal.Credit(
                    account,
                    STORE_CREDIT_GRANT,
                    Ref("adjustment", "admin", "bench", f"admin:bench-sc-{account.customer_id}"),
                )
                for account in credit.values()
            ]
            journal.credit_many(session, credits)
    for stream in streams:
        for start in range(0, len(stream.prior), batch):
            results = inbox.process_batch(stream.prior[start : start + batch])
            bad = [r for r in results if r.status != "processed"]
            assert not bad, f"prior orders not placed: {bad[:3]}"
        for start in range(0, len(stream.holds), batch):
            chunk_holds = stream.holds[start : start + batch]
            with session_scope() as session:
                accounts = lock_dust_accounts(session, [c for c, _, _ in chunk_holds])
                for who, cart, amount in chunk_holds:
                    done = holds.reserve(session, accounts[who], cart, amount, 86400)
                    assert done.status == "reserved", done


def fingerprint(engine: Any) -> dict[str, Any]:
    """The ledger without ids or instants: what any arrival order must give the same."""
    from sqlalchemy import text

    queries = {
        "accounts": "SELECT customer_id, kind, currency_code, balance, held, pending"
        " FROM dust_accounts WHERE customer_id IS NOT NULL ORDER BY 1, 2, 3",
        "entries": "SELECT reason, direction, COUNT(*), SUM(amount) FROM dust_entries"
        " GROUP BY 1, 2 ORDER BY 1, 2",
        "lots": "SELECT a.customer_id, SUM(l.remaining), COUNT(*) FROM dust_lots l"
        " JOIN dust_accounts a ON a.id = l.account_id GROUP BY 1 ORDER BY 1",
        "orders": "SELECT order_id, earned, clawed_back, charged_dust, charged_store_credit,"
        " canceled FROM dust_orders ORDER BY 1",
        "holds": "SELECT cart_id, status, captured FROM dust_holds ORDER BY 1",
        "events": "SELECT status, COUNT(*) FROM dust_events GROUP BY 1 ORDER BY 1",
        "keys_twice": "SELECT COUNT(*) FROM (SELECT idempotency_key FROM dust_entries"
        " WHERE idempotency_key IS NOT NULL GROUP BY 1 HAVING COUNT(*) > 1) t",
    }
    with engine.connect() as connection:
        return {
            name: [tuple(row) for row in connection.execute(text(sql))]
            for name, sql in queries.items()
        }
