"""Where one ``order.placed`` spends its time: statements, round trips, commit, Python.

    .venv/bin/python bench/profile_event.py            # 500 events, then 500 under cProfile
    .venv/bin/python bench/profile_event.py -n 2000 --top 40
    .venv/bin/python bench/profile_event.py --batch 50   # 50 per transaction, as batched

Runs ``dust.tasks.inbox.process`` (what ``dust.handle_event`` calls) in this one process, no
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

from dust.tasks import inbox  # noqa: E402
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
        # pre-ping (an empty statement), BEGIN and COMMIT (psycopg's own commands).
        execute = psycopg.Cursor.execute
        exec_command = BaseConnection._exec_command

        def counted_execute(cursor: Any, *args: Any, **kwargs: Any) -> Any:
            meter.round_trips += 1
            return execute(cursor, *args, **kwargs)

        def counted_command(connection: Any, *args: Any, **kwargs: Any) -> Any:
            meter.round_trips += 1
            return exec_command(connection, *args, **kwargs)

        psycopg.Cursor.execute = counted_execute  # type: ignore[method-assign]
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


def run(envelopes: list[dict]) -> float:
    """Apply ``envelopes`` one at a time (no ``--batch``: the task's per-message path) or
    ``BATCH`` per transaction (``inbox.process_batch``, what the worker's batches call;
    ``--batch 1`` is a batch of one, as at a slow stream)."""
    started = time.perf_counter()
    if BATCH is None:
        for envelope in envelopes:
            result = inbox.process(envelope)
            assert result.status == "processed", result
    else:
        for start in range(0, len(envelopes), BATCH):
            for result in inbox.process_batch(envelopes[start : start + BATCH]):
                assert result.status == "processed", result
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
    args = parser.parse_args()
    global BATCH
    BATCH = args.batch
    n = args.events
    customers = max(1, n // 5)

    reset_database(URL)
    engine = get_engine()
    create_customers(engine, customers)
    if args.rules:
        create_rules(engine, customers)
    meter = Meter()
    meter.install(engine)
    run([order_placed("w", o, customers) for o in range(20)])  # connect, warm caches

    with engine.connect() as connection:
        started = time.perf_counter()
        for _ in range(200):
            connection.execute(text("SELECT 1"))
        rtt = (time.perf_counter() - started) / 200
    meter.reset()

    rules = ", three earn rules in force" if args.rules else ""
    print(
        f"order.placed, one process, {n} events, {BATCH} per transaction{rules}, {load_average()}"
    )
    wall = run([order_placed("m", o, customers) for o in range(n)])
    statements = sum(meter.statements.values())
    sql = sum(meter.sql_seconds.values())
    per = 1000 / n
    print(f"  wall per event:              {wall * per:.2f} ms  ({n / wall:.0f} events/s)")
    print(f"  statements per event:        {statements / n:.1f} (seen by SQLAlchemy)")
    print(
        f"  round trips per event:       {meter.round_trips / n:.1f} "
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
    envelopes = [order_placed("p", o, customers) for o in range(n)]
    profiler.enable()
    run(envelopes)
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
