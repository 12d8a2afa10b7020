"""Benchmark: lot expiry and reconciliation on PostgreSQL, at a size and at twice that size.

    .venv/bin/python bench/expiry_reconcile.py            # 100k/200k lots, 1M/2M entries
    .venv/bin/python bench/expiry_reconcile.py --lots 50000 --entries 200000

Uses the database ``dust_bench`` (``DUST_BENCH_DATABASE_URL``), rebuilt from the migrations
for every data set. Data is bulk-loaded with ``INSERT … SELECT generate_series`` (foreign-key
triggers off during the load, the data being consistent by construction), then
``VACUUM ANALYZE``, as autovacuum would leave a live database. Timed is the code the
scheduler and the commands run: ``dust.tasks.runs.run_now`` (chunks of accounts, one
transaction each), plus the one-shot ``dust.ledger.reconcile.reconcile`` for comparison.

Expiry data: ``lots / 2`` dust accounts, each with two due lots and one lot expiring next
year; every tenth account holds part of its balance in an active hold (held dust must not
expire). Reconciliation data: ``entries / 10`` accounts (half dust, half store credit) with
ten entries each, posted interleaved across accounts as a live ledger would (entry ids in
time order, not account order), five lots per dust account, a hold on every tenth account.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

URL = os.environ.get(
    "DUST_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/dust_bench"
)
os.environ["DUST_DATABASE_URL"] = URL

from dust.ledger import reconcile  # noqa: E402
from dust.models.base import utcnow  # noqa: E402
from dust.models.schema import upgrade  # noqa: E402
from dust.tasks import runs  # noqa: E402
from dust.worker import db as worker_db  # noqa: E402
from dust.worker.settings import get_settings  # noqa: E402


def fresh_database() -> None:
    target = make_url(URL)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        if not connection.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": target.database}
        ):
            connection.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()
    worker_db.dispose_engines()
    engine = create_engine(URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    upgrade(URL)
    get_settings.cache_clear()


def load(statements: list[str], **params: object) -> float:
    started = time.perf_counter()
    engine = create_engine(URL)
    with engine.begin() as connection:
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        for statement in statements:
            connection.execute(text(statement), params)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))
        # Start timing from a quiet server, not in the middle of the load's checkpoint.
        connection.execute(text("CHECKPOINT"))
    engine.dispose()
    return time.perf_counter() - started


def load_expiry(lots: int) -> float:
    """``lots`` due lots on ``lots / 2`` accounts (+ one lot not due each)."""
    accounts = lots // 2
    return load(
        [
            # balance 10 + 20 + 30 = 60; every tenth account holds 45 of it
            """INSERT INTO dust_accounts (id, customer_id, kind, balance, held, created_at)
               SELECT a, 'cus_' || a, 'dust', 60, CASE WHEN a % 10 = 0 THEN 45 ELSE 0 END, now()
               FROM generate_series(1, :accounts) a""",
            """INSERT INTO dust_entries (id, account_id, direction, amount, balance_after,
                   reason, reference_type, reference_id, forgiven, created_at)
               SELECT (k - 1) * :accounts + a, a, 'credit', 10 * k,
                      CASE k WHEN 1 THEN 10 WHEN 2 THEN 30 ELSE 60 END,
                      'earn', 'order', 'o_' || a || '_' || k, 0, now()
               FROM generate_series(1, 3) k, generate_series(1, :accounts) a""",
            """INSERT INTO dust_lots (id, account_id, entry_id, amount, remaining, expires_at,
                   created_at)
               SELECT (k - 1) * :accounts + a, a, (k - 1) * :accounts + a, 10 * k, 10 * k,
                      CASE WHEN k < 3 THEN now() - (k || ' days')::interval
                           ELSE now() + interval '1 year' END, now()
               FROM generate_series(1, 3) k, generate_series(1, :accounts) a""",
            """INSERT INTO dust_holds (account_id, cart_id, amount, captured, status,
                   created_at, expires_at)
               SELECT a, 'cart_' || a, 45, 0, 'active', now(), now() + interval '1 hour'
               FROM generate_series(10, :accounts, 10) a""",
            "SELECT setval('dust_accounts_id_seq', :accounts)",
            "SELECT setval('dust_entries_id_seq', 3 * :accounts)",
            "SELECT setval('dust_lots_id_seq', 3 * :accounts)",
        ],
        accounts=accounts,
    )


def load_reconcile(entries: int) -> float:
    """``entries`` entries, ten per account, interleaved across accounts."""
    accounts = entries // 10
    return load(
        [
            # odd ids dust, even ids store credit; credit 20, debit 10, ... → balance 50
            """INSERT INTO dust_accounts (id, customer_id, kind, currency_code, code, balance,
                   held, created_at)
               SELECT a, 'cus_' || a,
                      CASE WHEN a % 2 = 1 THEN 'dust' ELSE 'store_credit' END,
                      CASE WHEN a % 2 = 1 THEN NULL ELSE 'usd' END,
                      CASE WHEN a % 2 = 1 THEN NULL ELSE 'SC-' || a END,
                      50, CASE WHEN a % 10 = 0 THEN 5 ELSE 0 END, now()
               FROM generate_series(1, :accounts) a""",
            """INSERT INTO dust_entries (id, account_id, direction, amount, balance_after,
                   reason, reference_type, reference_id, forgiven, created_at)
               SELECT (k - 1) * :accounts + a, a,
                      CASE WHEN k % 2 = 1 THEN 'credit' ELSE 'debit' END,
                      CASE WHEN k % 2 = 1 THEN 20 ELSE 10 END,
                      ((k + 1) / 2) * 20 - (k / 2) * 10,
                      'earn', 'order', 'o_' || a || '_' || k, 0, now()
               FROM generate_series(1, 10) k, generate_series(1, :accounts) a""",
            """INSERT INTO dust_lots (account_id, entry_id, amount, remaining, expires_at,
                   created_at)
               SELECT a, (k - 1) * :accounts + a, 20, 10, now() + interval '1 year', now()
               FROM generate_series(1, 10, 2) k, generate_series(1, :accounts, 2) a""",
            """INSERT INTO dust_holds (account_id, cart_id, amount, captured, status,
                   created_at, expires_at)
               SELECT a, 'cart_' || a, 5, 0, 'active', now(), now() + interval '1 hour'
               FROM generate_series(10, :accounts, 10) a""",
            "SELECT setval('dust_accounts_id_seq', :accounts)",
            "SELECT setval('dust_entries_id_seq', 10 * :accounts)",
        ],
        accounts=accounts,
    )


def timed(step: object) -> tuple[float, object]:
    started = time.perf_counter()
    result = step()  # type: ignore[operator]
    return time.perf_counter() - started, result


def bench_expiry(lots: int, chunk: int | None = None) -> dict[str, object]:
    fresh_database()
    loaded = load_expiry(lots)
    seconds, run = timed(lambda: runs.run_now("expire_lots", utcnow(), chunk_size=chunk))
    counts = run["counts"]  # type: ignore[index]
    # the result must be right, not just fast
    with worker_db.session_scope(read_only=True) as session:
        check = reconcile.reconcile(session)
    assert check["ok"], check["discrepancies"][:5]
    again, rerun = timed(lambda: runs.run_now("expire_lots", utcnow()))
    return {
        "due lots": lots,
        "accounts": lots // 2,
        "load s": loaded,
        "expire s": seconds,
        "lots expired": counts["lots"],
        "dust expired": counts["amount"],
        "chunks": counts["chunks"],
        "rerun s": again,
        "rerun expired": rerun["counts"]["amount"],  # type: ignore[index]
    }


def bench_reconcile(entries: int, chunk: int | None = None) -> dict[str, object]:
    fresh_database()
    loaded = load_reconcile(entries)
    seconds, run = timed(
        lambda: runs.run_now("reconcile", utcnow(), actor="bench", chunk_size=chunk)
    )
    counts = run["counts"]  # type: ignore[index]
    assert counts["ok"], counts
    assert counts["entries"] == entries, counts

    def one_shot() -> dict[str, object]:
        with worker_db.session_scope(read_only=True) as session:
            return reconcile.reconcile(session)

    whole, check = timed(one_shot)
    assert check["ok"]  # type: ignore[index]
    return {
        "entries": entries,
        "accounts": entries // 10,
        "load s": loaded,
        "reconcile s": seconds,
        "chunks": counts["chunks"],
        "one-shot s": whole,
    }


def show(title: str, rows: list[dict[str, object]], key: str) -> None:
    print(f"\n{title}")
    for n, row in enumerate(rows):
        growth = ""
        if n:
            growth = f"  (x{row[key] / rows[n - 1][key]:.2f} for x2 data)"  # type: ignore[operator]
        print(
            "  "
            + ", ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
            )
            + growth
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lots", type=int, default=100_000, help="due lots (then twice that)")
    parser.add_argument("--entries", type=int, default=1_000_000, help="entries (then twice)")
    parser.add_argument(
        "--chunk", type=int, help="accounts per transaction (default: the jobs' own)"
    )
    parser.add_argument("--only", choices=["expiry", "reconcile"], help="run one half only")
    args = parser.parse_args()
    engine = create_engine(URL)
    with engine.connect() as connection:
        version = connection.scalar(text("SHOW server_version"))
    engine.dispose()
    print(f"PostgreSQL {version} at {make_url(URL).render_as_string(hide_password=True)}")
    if args.only != "reconcile":
        expiry_rows = [bench_expiry(n, args.chunk) for n in (args.lots, 2 * args.lots)]
        show("lot expiry (tasks.runs.run_now('expire_lots'))", expiry_rows, "expire s")
    if args.only != "expiry":
        reconcile_rows = [bench_reconcile(n, args.chunk) for n in (args.entries, 2 * args.entries)]
        show("reconciliation (tasks.runs.run_now('reconcile'))", reconcile_rows, "reconcile s")


if __name__ == "__main__":
    main()
