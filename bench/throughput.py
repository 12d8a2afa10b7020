"""How many events per second one worker sustains on PostgreSQL + Redis (a first figure).

Starts one worker the way the Procfile does (``--concurrency 2`` by default), prepares N
``order.placed`` events and their ``customer.created`` events as real Celery messages
(published by a bare Celery client that does not import the project, then taken out of the
queue), pushes them all back onto ``dust.events`` in one Redis pipeline, and measures from
that publish to the last ``dust_events`` row committed.

    .venv/bin/python bench/throughput.py            # N = 5000 orders
    .venv/bin/python bench/throughput.py -n 20000 --concurrency 4

The database (default ``dust_throughput``) is reset and migrated; the Redis database (default
11) is flushed. Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path
from urllib.parse import urlsplit

import redis
from celery import Celery
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dust.worker import procfile  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUEUE = "dust.events"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--orders", type=int, default=5000, help="order.placed events")
    parser.add_argument(
        "--orders-per-customer", type=int, default=5, help="orders of each customer (default 5)"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="worker pool size")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "DUST_THROUGHPUT_DATABASE_URL",
            "postgresql+psycopg://postgres@127.0.0.1:5432/dust_throughput",
        ),
    )
    parser.add_argument(
        "--broker-url",
        default=os.environ.get("DUST_THROUGHPUT_BROKER_URL", "redis://127.0.0.1:6379/11"),
    )
    parser.add_argument("--timeout", type=float, default=600, help="give up after (s)")
    return parser.parse_args()


def reset_database(url: str) -> None:
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        if not connection.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database}
        ):
            connection.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    subprocess.run([str(BIN / "dust"), "db", "upgrade"], cwd=ROOT, env=env_for(url, ""), check=True)


def analyze(url: str) -> None:
    """``VACUUM ANALYZE`` the benchmark's database after its setup: the planner's
    statistics of a store's live database are what autovacuum keeps them, not those of
    tables just created. Without it, every table looks nearly empty to the planner while
    the setup has filled it (thousands of orders and lots), and it picks plans that read
    whole tables, or an index through its first column only."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def env_for(database_url: str, broker_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUST_")}
    env["DUST_DATABASE_URL"] = database_url
    if broker_url:
        env["DUST_BROKER_URL"] = broker_url
        env["DUST_RESULT_BACKEND"] = broker_url
    return env


def envelopes(orders: int, per_customer: int) -> list[dict]:
    customers = max(1, -(-orders // per_customer))
    out: list[dict] = [
        {"id": f"evt_c{c}", "name": "customer.created", "data": {"id": f"cus_{c}"}}
        for c in range(customers)
    ]
    for o in range(orders):
        out.append(
            {
                "id": f"evt_o{o}",
                "name": "order.placed",
                "occurred_at": "2026-11-20T10:00:00Z",
                "data": {
                    "id": f"order_{o}",
                    "customer_id": f"cus_{o % customers}",
                    "cart_id": f"cart_{o}",
                    "currency_code": "usd",
                    "total": 10999 + o % 1000,
                    "shipping_total": 999,
                    "items": [
                        {"id": f"item_{o}", "product_id": "prod_1", "total": 10000 + o % 1000}
                    ],
                },
            }
        )
    return out


def prepared_messages(broker_url: str, items: list[dict]) -> list[bytes]:
    """The Celery messages a bare client publishes for ``items``, in publishing order."""
    client = Celery("bench-client", broker=broker_url)
    client.conf.update(task_serializer="json", broker_connection_retry_on_startup=True)
    with client.producer_or_acquire() as producer:
        for item in items:
            client.send_task("dust.handle_event", args=[item], queue=QUEUE, producer=producer)
    client.close()
    r = redis.Redis.from_url(broker_url)
    # kombu LPUSHes and the worker BRPOPs: the list holds the first message rightmost.
    messages = r.lrange(QUEUE, 0, -1)
    r.delete(QUEUE)
    assert len(messages) == len(items), (len(messages), len(items))
    return messages


def start_worker(
    database_url: str, broker_url: str, concurrency: int, log: Path
) -> tuple[procfile.Process, list[str]]:
    command = procfile.worker_command(
        ["dust.events", "dust.requests"], "--concurrency", str(concurrency), "-n", "bench@%h"
    )
    worker = procfile.Process(
        "worker", command, log, env=env_for(database_url, broker_url), cwd=ROOT
    )
    try:
        worker.start().wait_ready(60)
    except procfile.ProcessFailed as exc:
        worker.stop()
        sys.exit(f"worker did not start:\n{exc}")
    return worker, command


def main() -> None:
    args = parse_args()
    if urlsplit(args.broker_url).path.strip("/") in ("", "0", "15"):
        sys.exit("refusing Redis database 0 or 15: pass --broker-url redis://host:6379/N")
    items = envelopes(args.orders, args.orders_per_customer)
    total = len(items)

    reset_database(args.database_url)
    redis.Redis.from_url(args.broker_url).flushdb()
    messages = prepared_messages(args.broker_url, items)

    log = Path(tempfile.mkdtemp(prefix="dust-bench-")) / "worker.log"
    proc, command = start_worker(args.database_url, args.broker_url, args.concurrency, log)
    engine = create_engine(args.database_url)
    try:
        r = redis.Redis.from_url(args.broker_url)
        pipe = r.pipeline(transaction=False)
        for start in range(0, len(messages), 1000):
            pipe.rpush(QUEUE, *messages[start : start + 1000])
        started = time.time()
        pipe.execute()
        published = time.time()

        deadline = time.monotonic() + args.timeout
        while True:
            with engine.connect() as connection:
                done = connection.scalar(text("SELECT COUNT(*) FROM dust_events"))
            if done >= total:
                break
            if time.monotonic() > deadline or not proc.running():
                sys.exit(f"only {done}/{total} events after {args.timeout}s; log: {log}")
            time.sleep(0.2)
        with engine.connect() as connection:
            last = connection.scalar(text("SELECT MAX(processed_at) FROM dust_events"))
            statuses = dict(
                connection.execute(
                    text("SELECT status, COUNT(*) FROM dust_events GROUP BY status")
                ).all()
            )
            earned = connection.scalar(
                text("SELECT COALESCE(SUM(balance), 0) FROM dust_accounts WHERE kind = 'dust'")
            )
    finally:
        proc.stop()
        engine.dispose()

    elapsed = last.astimezone(UTC).timestamp() - started
    print(f"worker:      {' '.join(command[2:])} (pool size {args.concurrency})")
    print(f"database:    {make_url(args.database_url).render_as_string(hide_password=True)}")
    print(f"broker:      {args.broker_url}")
    print(
        f"N:           {args.orders} order.placed + {total - args.orders} customer.created"
        f" = {total} events"
    )
    print(f"publish:     {published - started:.3f} s (one Redis pipeline)")
    print(f"elapsed:     {elapsed:.2f} s (first publish -> last dust_events row committed)")
    print(f"throughput:  {total / elapsed:.0f} events/s ({args.orders / elapsed:.0f} orders/s)")
    print(f"statuses:    {statuses}; dust earned in total: {earned}")
    print(f"worker log:  {log}")


if __name__ == "__main__":
    main()
