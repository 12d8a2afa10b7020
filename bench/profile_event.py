"""Where one event spends its time: statements, round trips, commit, Python.

    .venv/bin/python bench/profile_event.py            # 500 events, then 500 under cProfile
    .venv/bin/python bench/profile_event.py -n 2000 --top 40
    .venv/bin/python bench/profile_event.py --batch 50   # 50 per transaction, as batched
    .venv/bin/python bench/profile_event.py --batch 100 --event charge   # or refund, cancel

``--event``: ``placed`` (default; an ``order.placed`` that charges nothing), ``charge`` (an
``order.placed`` that pays 100 dust, every other one from a hold on its cart reserved
beforehand), ``refund`` (a ``refund.created`` of an order placed beforehand, half of them
to store credit, every fourth also giving back dust), ``cancel`` (an ``order.canceled``
of an order placed beforehand, half of them charged dust), ``mix`` (per 20 events: 12
new orders that charge nothing, 3 that charge dust, 3 refunds, 1 cancel, 1 new
customer). For all but ``placed``, each customer has 1,000,000 dust in ten lots of
different expiries.

Runs ``dust.inbox.process`` (what ``dust.handle_event`` calls) in this one process, no
Celery, on the database ``dust_perf_profile`` (rebuilt; customers' dust accounts created
first, so each event is the common case: account found, earn, lot). Counts and times every
statement with SQLAlchemy's ``before/after_cursor_execute`` events, times the DBAPI commit,
and measures one bare round trip (``SELECT 1``) for scale. Then profiles a second batch with
cProfile. Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

URL = os.environ.get(
    "DUST_PERF_PROFILE_DATABASE_URL",
    "postgresql+psycopg://postgres@127.0.0.1:5432/dust_perf_profile",
)
os.environ["DUST_DATABASE_URL"] = URL

import psycopg  # noqa: E402
from e2e import create_customers, create_rules, load_average, order_placed  # noqa: E402
from psycopg._connection_base import BaseConnection  # noqa: E402
from sqlalchemy import event, text  # noqa: E402
from throughput import reset_database  # noqa: E402

from dust import inbox  # noqa: E402
from dust.worker.db import get_engine  # noqa: E402


class Meter:
    def __init__(self) -> None:
        self.statements: Counter[str] = Counter()
        self.sql_seconds: defaultdict[str, float] = defaultdict(float)
        self.commits = 0
        self.commit_seconds = 0.0
        self.round_trips = 0
        self._started: list[float] = []

    def install(self, engine: Any) -> None:
        @event.listens_for(engine, "before_cursor_execute")
        def _before(*_: Any) -> None:
            self._started.append(time.perf_counter())

        @event.listens_for(engine, "after_cursor_execute")
        def _after(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            key = shape(statement)
            self.statements[key] += 1
            self.sql_seconds[key] += time.perf_counter() - self._started.pop()

        commit = psycopg.Connection.commit
        meter = self

        def timed_commit(connection: Any) -> None:
            started = time.perf_counter()
            try:
                commit(connection)
            finally:
                meter.commits += 1
                meter.commit_seconds += time.perf_counter() - started

        psycopg.Connection.commit = timed_commit  # type: ignore[method-assign]

        # Every round trip, including what SQLAlchemy's events do not see: the pool's
        # pre-ping (an empty statement), BEGIN and COMMIT (psycopg's own commands). The
        # statements of a pipeline (the writes sent together, worker/db.py) are one.
        execute = psycopg.Cursor.execute
        exec_command = BaseConnection._exec_command
        pipeline_exit = psycopg.Pipeline.__exit__

        def counted_execute(cursor: Any, *args: Any, **kwargs: Any) -> Any:
            if cursor.connection._pipeline is None:
                meter.round_trips += 1
            return execute(cursor, *args, **kwargs)

        def counted_pipeline(pipeline: Any, *args: Any) -> Any:
            meter.round_trips += 1
            return pipeline_exit(pipeline, *args)

        def counted_command(connection: Any, *args: Any, **kwargs: Any) -> Any:
            meter.round_trips += 1
            return exec_command(connection, *args, **kwargs)

        psycopg.Cursor.execute = counted_execute  # type: ignore[method-assign]
        psycopg.Pipeline.__exit__ = counted_pipeline  # type: ignore[method-assign]
        BaseConnection._exec_command = counted_command  # type: ignore[method-assign]

    def reset(self) -> None:
        self.statements.clear()
        self.sql_seconds.clear()
        self.commits = 0
        self.commit_seconds = 0.0
        self.round_trips = 0


def shape(statement: str) -> str:
    """A statement reduced to its kind and table, e.g. ``SELECT dust_accounts FOR UPDATE``."""
    flat = " ".join(statement.split())
    verb = flat.split(" ", 1)[0].upper()
    tables = re.findall(r"\b(?:FROM|INTO|UPDATE|JOIN)\s+(dust_\w+)", flat, re.IGNORECASE)
    extra = " FOR UPDATE" if "FOR UPDATE" in flat.upper() else ""
    if verb in ("SAVEPOINT", "RELEASE", "ROLLBACK"):
        return verb + (" SAVEPOINT" if verb != "SAVEPOINT" else "")
    return f"{verb} {tables[0] if tables else flat[:40]}{extra}"


BATCH: int | None = None
EVENT = "placed"
EXPECTED = {"processed"}


def fund_customers(engine: Any, customers: int) -> None:
    """Give every customer's dust account 1,000,000 dust: ten credits of 100,000, each
    its own entry and lot, expiring 30 to 300 days out (so debits draw several lots)."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO dust_entries (account_id, direction, amount, balance_after, reason,"
                " reference_type, reference_id, forgiven, created_at)"
                " SELECT a.id, 'credit', 100000, 100000 * k, 'adjustment', 'admin', 'seed', 0,"
                " now() FROM dust_accounts a, generate_series(1, 10) k ORDER BY a.id, k"
            )
        )
        connection.execute(
            text(
                "INSERT INTO dust_lots (account_id, entry_id, amount, remaining, expires_at,"
                " created_at) SELECT e.account_id, e.id, e.amount, e.amount,"
                " now() + make_interval(days => 30 * (e.balance_after / 100000)::int), now()"
                " FROM dust_entries e WHERE e.reference_id = 'seed'"
            )
        )
        connection.execute(text("UPDATE dust_accounts SET balance = 1000000"))


def reserve_holds(tag: str, orders: range, customers: int) -> None:
    """Reserve 100 dust for the cart of every other order (``dust.ledger.holds.reserve``)."""
    from dust.ledger import holds
    from dust.ledger.accounts import ensure_account, lock_accounts
    from dust.models.tables import DUST
    from dust.worker.db import session_scope

    with session_scope() as session:
        for o in orders:
            account_id = ensure_account(session, f"cus_{o % customers}", DUST)
            account = lock_accounts(session, [account_id])[account_id]
            holds.reserve(session, account, f"cart_{tag}{o}", 100, 3600)


def charging(tag: str, o: int, customers: int) -> dict:
    envelope = order_placed(tag, o, customers)
    envelope["data"]["dust_total"] = 100
    return envelope


def refund(tag: str, o: int) -> dict:
    return {
        "id": f"evt_r{tag}{o}",
        "name": "refund.created",
        "occurred_at": "2026-11-21T10:00:00Z",
        "data": {
            "id": f"re_{tag}{o}",
            "order_id": f"order_{tag}{o}",
            "amount": 2000 + o % 100,
            "currency_code": "usd",
            "to_store_credit": o % 2 == 0,
            "dust_amount": 50 if o % 4 == 1 else 0,
        },
    }


def cancel(tag: str, o: int) -> dict:
    return {
        "id": f"evt_x{tag}{o}",
        "name": "order.canceled",
        "occurred_at": "2026-11-21T10:00:00Z",
        "data": {"id": f"order_{tag}{o}"},
    }


def stream(tag: str, n: int, customers: int) -> list[dict]:
    """The ``n`` events measured (``--event``), after what they need is in place."""
    if EVENT == "placed":
        return [order_placed(tag, o, customers) for o in range(n)]
    if EVENT == "charge":
        reserve_holds(tag, list(range(0, n, 2)), customers)
        return [charging(tag, o, customers) for o in range(n)]
    # Refunds and cancels: their orders first (every other one charging 100 dust, from a
    # hold for half of those), in batches of 100.
    charged = {o for o in range(n) if o % 2 == 1}
    reserve_holds(tag, [o for o in charged if o % 4 == 1], customers)
    placed = [
        charging(tag, o, customers) if o in charged else order_placed(tag, o, customers)
        for o in range(n)
    ]
    for start in range(0, n, 100):
        for result in inbox.process_batch(placed[start : start + 100]):
            assert result.status == "processed", result
    if EVENT == "mix":
        return mix(tag, n, customers)
    make = refund if EVENT == "refund" else cancel
    return [make(tag, o) for o in range(n)]


def mix(tag: str, n: int, customers: int) -> list[dict]:
    """A store's stream: of every 20 events, 12 new orders that charge nothing, 3 orders
    that pay 100 dust (from a hold for every other one), 3 refunds (of the orders placed
    beforehand; half to store credit), 1 cancel (of those too), 1 new customer."""
    out: list[dict] = []
    kinds = "PPPCPPRPPCPXRPPCPRNP"  # P plain, C charge, R refund, X cancel, N customer
    held = [i for i in range(0, n, 2) if kinds[i % len(kinds)] == "C"]
    reserve_holds(f"{tag}c", held, customers)
    for i in range(n):
        kind = kinds[i % len(kinds)]
        if kind == "P":
            out.append(order_placed(f"{tag}n", i, customers))
        elif kind == "C":
            out.append(charging(f"{tag}c", i, customers))
        elif kind == "R":
            out.append(refund(tag, i))
        elif kind == "X":
            out.append(cancel(tag, i))
        else:
            out.append(
                {
                    "id": f"evt_c{tag}{i}",
                    "name": "customer.created",
                    "data": {"id": f"cus_new_{tag}{i}"},
                }
            )
    return out


def run(envelopes: list[dict]) -> float:
    """Apply ``envelopes`` one at a time (no ``--batch``: the task's per-message path) or
    ``BATCH`` per transaction (``inbox.process_batch``, what the worker's batches call;
    ``--batch 1`` is a batch of one, as at a slow stream)."""
    started = time.perf_counter()
    if BATCH is None:
        for envelope in envelopes:
            result = inbox.process(envelope)
            assert result.status in EXPECTED, result
    else:
        for start in range(0, len(envelopes), BATCH):
            for result in inbox.process_batch(envelopes[start : start + BATCH]):
                assert result.status in EXPECTED, result
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--events", type=int, default=500)
    parser.add_argument("--top", type=int, default=30, help="cProfile rows to print")
    parser.add_argument(
        "--batch", type=int, help="events per batch (default: the per-message task path)"
    )
    parser.add_argument(
        "--rules", action="store_true", help="three earn rules in force (bench/e2e.py --rules)"
    )
    parser.add_argument(
        "--event", choices=("placed", "charge", "refund", "cancel", "mix"), default="placed"
    )
    args = parser.parse_args()
    global BATCH, EVENT
    BATCH = args.batch
    EVENT = args.event
    n = args.events
    customers = max(1, n // 5)

    reset_database(URL)
    engine = get_engine()
    create_customers(engine, customers)
    if args.rules:
        create_rules(engine, customers)
    if EVENT != "placed":
        fund_customers(engine, customers)
    meter = Meter()
    meter.install(engine)
    run([order_placed("w", o, customers) for o in range(20)])  # connect, warm caches

    with engine.connect() as connection:
        started = time.perf_counter()
        for _ in range(200):
            connection.execute(text("SELECT 1"))
        rtt = (time.perf_counter() - started) / 200
    measured = stream("m", n, customers)
    profiled = stream("p", n, customers)
    meter.reset()

    rules = ", three earn rules in force" if args.rules else ""
    print(f"{EVENT}, one process, {n} events, {BATCH} per transaction{rules}, {load_average()}")
    cpu = time.process_time()
    wall = run(measured)
    cpu = time.process_time() - cpu
    statements = sum(meter.statements.values())
    sql = sum(meter.sql_seconds.values())
    per = 1000 / n
    print(f"  wall per event:              {wall * per:.2f} ms  ({n / wall:.0f} events/s)")
    print(f"  CPU of this process per event: {cpu * per:.3f} ms (less moved by a loaded machine)")
    print(f"  statements per event:        {statements / n:.2f} (seen by SQLAlchemy)")
    print(
        f"  round trips per event:       {meter.round_trips / n:.2f} "
        "(+ pool pre-ping, BEGIN, COMMIT)"
    )
    print(f"  time in statements:          {sql * per:.2f} ms")
    print(
        f"  commit:                      {meter.commit_seconds * per:.2f} ms ({meter.commits / n:.1f} per event)"
    )
    print(f"  rest (Python, pre-ping, BEGIN): {(wall - sql - meter.commit_seconds) * per:.2f} ms")
    print(f"  one bare round trip SELECT 1: {rtt * 1000:.3f} ms")
    print("  statements of one event (count per event, ms per event):")
    for key, count in sorted(meter.statements.items(), key=lambda kv: -kv[1]):
        print(f"    {count / n:5.2f}  {meter.sql_seconds[key] * per:6.3f} ms  {key}")

    profiler = cProfile.Profile()
    profiler.enable()
    run(profiled)
    profiler.disable()
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(args.top)
        body = out.getvalue()
        print(f"\ncProfile of {n} events, by {order}:")
        print(body[body.find("   ncalls") :].rstrip())
    print(f"\nfinished, {load_average()}")


if __name__ == "__main__":
    main()
