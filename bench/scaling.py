"""Scaling: how expiry, reconciliation and balance reads grow with the size of the ledger.

    .venv/bin/python bench/scaling.py                       # expiry 1e4, 1e5; reconcile 1e5, 1e6
    .venv/bin/python bench/scaling.py --expiry 10000 100000 1000000 \\
        --reconcile 100000 1000000 10000000 --balance-accounts 1000000

Data is loaded with ``bench/expiry_reconcile.py``'s loaders (``INSERT … SELECT
generate_series``, then ``VACUUM ANALYZE`` and ``CHECKPOINT``) into the database
``dust_perf_scale`` (``DUST_PERF_SCALE_DATABASE_URL``), rebuilt for every size.

- **expiry**: ``dust.tasks.runs.run_now('expire_lots')`` over ``n`` due lots (``n / 2`` accounts),
  the scheduler's code; the ledger is reconciled afterwards (the result must be right).
- **reconciliation**: ``dust.tasks.runs.run_now('reconcile')`` (chunked, as the scheduler runs it)
  and the one-shot ``dust.ledger.reconcile.reconcile`` over ``n`` entries (``n / 10`` accounts),
  next to the **bare aggregate**: the one query that checks cached balances against the
  journal, ``SELECT … SUM(CASE direction …) FROM dust_entries GROUP BY account_id`` joined
  to ``dust_accounts``, counting mismatches — timed with PostgreSQL's own plan, and again
  with ``enable_indexscan = off`` (sequential scan and hash aggregate), the faster plan at
  some sizes, so the job is also compared with the quicker of the two.
- **balance reads**: ``dust.ledger.reports.balance`` (what ``dust.balance`` and ``dust balance``
  run), one transaction per read, in this process, over random customers of a ledger with
  ``--balance-accounts`` dust accounts; p50 / p99.

Each figure is printed with the load average at the time (the machine may be shared).
The worker's memory is measured by ``bench/e2e.py`` (before and after its load).
Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ["DUST_BENCH_DATABASE_URL"] = os.environ.get(
    "DUST_PERF_SCALE_DATABASE_URL",
    "postgresql+psycopg://postgres@127.0.0.1:5432/dust_perf_scale",
)

import expiry_reconcile as er  # noqa: E402  (sets DUST_DATABASE_URL from the URL above)
from sqlalchemy import create_engine, text  # noqa: E402

from dust.ledger import reports  # noqa: E402
from dust.worker import db as worker_db  # noqa: E402

BARE_AGGREGATE = """
SELECT COUNT(*) FROM dust_accounts a
JOIN (SELECT account_id,
             SUM(CASE direction WHEN 'credit' THEN amount ELSE -amount END) AS total
      FROM dust_entries GROUP BY account_id) s ON s.account_id = a.id
WHERE a.balance <> s.total
"""


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def bare_aggregate(*settings: str) -> tuple[float, int]:
    """The bare aggregate's time (and mismatches), in a transaction with ``settings``
    (``SET LOCAL …``) applied first."""
    engine = create_engine(er.URL)
    with engine.begin() as connection:
        for setting in settings:
            connection.execute(text(f"SET LOCAL {setting}"))
        started = time.perf_counter()
        mismatches = connection.scalar(text(BARE_AGGREGATE))
        seconds = time.perf_counter() - started
    engine.dispose()
    return seconds, int(mismatches or 0)


def growth(rows: list[dict[str, float]], size: str, key: str) -> str:
    if len(rows) < 2:
        return ""
    a, b = rows[-2], rows[-1]
    return f"  (x{b[key] / a[key]:.2f} time for x{b[size] / a[size]:.0f} size)"


def expiry(sizes: list[int]) -> None:
    print("\nlot expiry, dust.tasks.runs.run_now('expire_lots')")
    rows: list[dict[str, float]] = []
    for lots in sizes:
        row = er.bench_expiry(lots)
        rows.append(row)  # type: ignore[arg-type]
        per = 1e6 * row["expire s"] / lots  # type: ignore[operator]
        print(
            f"  {lots:>9} due lots: {row['expire s']:8.2f} s  ({per:.1f} µs per lot; "
            f"{row['chunks']} chunks; load {row['load s']:.0f} s)"
            f"{growth(rows, 'due lots', 'expire s')}  [{load_average()}]",
            flush=True,
        )


def reconciliation(sizes: list[int]) -> None:
    print("\nreconciliation: run_now('reconcile') | one-shot reconcile | bare aggregate")
    rows: list[dict[str, float]] = []
    for entries in sizes:
        row = er.bench_reconcile(entries)
        bare, mismatches = bare_aggregate()
        assert mismatches == 0, mismatches
        # the same query with the index scan ruled out: a (parallel) sequential scan and a
        # hash aggregate, which is the faster plan at some sizes
        seq, mismatches = bare_aggregate("enable_indexscan = off")
        assert mismatches == 0, mismatches
        row["bare s"] = bare
        rows.append(row)  # type: ignore[arg-type]
        print(
            f"  {entries:>9} entries: job {row['reconcile s']:8.2f} s ({row['chunks']} chunks),"
            f" one-shot {row['one-shot s']:8.2f} s, bare {bare:7.2f} s -> job / bare "
            f"{row['reconcile s'] / bare:.2f}x, one-shot / bare "
            f"{row['one-shot s'] / bare:.2f}x; bare without index scan {seq:7.2f} s -> job / "
            f"that {row['reconcile s'] / seq:.2f}x  (load {row['load s']:.0f} s)"
            f"{growth(rows, 'entries', 'reconcile s')}  [{load_average()}]",
            flush=True,
        )


def balance_reads(accounts: int, reads: int) -> None:
    er.fresh_database()
    loaded = er.load_expiry(2 * accounts)  # `accounts` dust accounts, 3 entries and lots each
    engine = worker_db.get_engine()
    rng = random.Random(7)
    latencies = []
    for _ in range(reads):
        customer = f"cus_{rng.randint(1, accounts)}"
        started = time.perf_counter()
        with worker_db.session_scope(engine, read_only=True) as session:
            result = reports.balance(session, customer)
        latencies.append(time.perf_counter() - started)
        assert result["dust"]["balance"] == 60, result
    latencies.sort()
    ms = [1000 * x for x in latencies]
    p50, p99 = ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(
        f"\nbalance read, dust.ledger.reports.balance in-process, {accounts} accounts "
        f"(load {loaded:.0f} s), {reads} random customers: p50 {p50:.2f} ms, "
        f"p99 {p99:.2f} ms, max {ms[-1]:.2f} ms  [{load_average()}]",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--expiry", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--reconcile", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--balance-accounts", type=int, default=1_000_000)
    parser.add_argument("--balance-reads", type=int, default=2000)
    args = parser.parse_args()
    engine = create_engine(er.URL)
    try:
        with engine.connect() as connection:
            version = connection.scalar(text("SHOW server_version"))
    except Exception:
        version = "?"  # the database does not exist yet: the first fresh_database makes it
    engine.dispose()
    print(f"scaling, PostgreSQL {version}, {os.cpu_count()} cpus, {load_average()}")
    if args.expiry:
        expiry(args.expiry)
    if args.reconcile:
        reconciliation(args.reconcile)
    if args.balance_accounts:
        balance_reads(args.balance_accounts, args.balance_reads)


if __name__ == "__main__":
    main()
