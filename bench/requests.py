"""Checkout requests beside a backlog of events: ``dust.reserve`` round trips while events drain.

One command, one printed report (BENCHMARKS.md explains the figures):

    .venv/bin/python bench/requests.py                      # backlogs 40,000 and 200,000
    .venv/bin/python bench/requests.py --backlog 40000 --burst 0
    .venv/bin/python bench/requests.py --procfile /tmp/old-Procfile   # another process layout
    .venv/bin/python bench/requests.py --pg-cluster --diagnose   # production PostgreSQL, why

Every process of the Procfile but ``beat`` is started through ``dust.worker.procfile`` on
``DUST_PERF_DATABASE_URL`` (default database ``dust_perf``, schema rebuilt) and
``DUST_PERF_BROKER_URL`` (default Redis database 11, flushed; also the result backend).
50 shop customers get 1,000,000 dust each by ``dust.admin.adjust``; each ``dust.reserve``
replaces the hold of one of their carts (amount 1 or 2, alternating: a real write each
time), one request at a time, the next sent when the reply is in (a checkout waits for it).
The customers of the ``order.placed`` events are others (their accounts exist beforehand),
so a reserve never waits on a row lock of an event: what is measured is the wait for the
worker.

1. **idle**: ``--idle`` reserves with no event queued; its median is the yardstick.
2. **burst**: ``--burst`` ``order.placed`` pushed in one Redis pipeline while the processes
   run; reserves until the last of them is committed.
3. **restart on a backlog** (each ``--backlog``): the processes are stopped (SIGTERM, a
   deploy), the backlog pushed, the processes started again; reserves from the moment every
   process says it is ready until the backlog is drained. The first 20 requests, p50/p99/max
   over the drain, and the drain's throughput (events / (last commit - ready)).

During each drain a second client sends what ``dust credit``, ``dust debit`` and ``dust
claim`` send (``dust.admin.adjust`` / ``dust.admin.claim`` on ``dust.requests``), one at a
time, 50 ms apart; claims take anonymous store-credit accounts made beforehand by guest
orders refunded to store credit. ``--cli`` also times the ``dust credit`` command itself
(a new Python process each time) idle and during the first restart's drain. Not a test: it
prints numbers.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from celery import Celery
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2e import (  # noqa: E402
    create_customers,
    epoch,
    git_state,
    load_average,
    order_placed,
    percentile,
    push_all,
    template,
    wire,
)
from pg_cluster import production_cluster  # noqa: E402
from stalls import Sampler, checkpoints, explain  # noqa: E402
from throughput import reset_database  # noqa: E402

from dust.worker import procfile  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REQUESTS_QUEUE = "dust.requests"
SHOP = "shop_"
FIRST = 20


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backlog",
        type=int,
        action="append",
        help="events queued before a restart (repeatable; default 40000 and 200000)",
    )
    parser.add_argument("--burst", type=int, default=40000, help="0 skips the burst phase")
    parser.add_argument("--idle", type=int, default=200, help="idle reserves (default 200)")
    parser.add_argument("--shop-customers", type=int, default=50)
    parser.add_argument(
        "--claims", type=int, default=1000, help="anonymous accounts to claim (default 1000)"
    )
    parser.add_argument("--orders-per-customer", type=int, default=5)
    parser.add_argument("--procfile", type=Path, default=procfile.PROCFILE)
    parser.add_argument("--cli", action="store_true", help="also time the dust credit command")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "DUST_PERF_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/dust_perf"
        ),
    )
    parser.add_argument(
        "--broker-url",
        default=os.environ.get("DUST_PERF_BROKER_URL", "redis://127.0.0.1:6379/11"),
    )
    parser.add_argument("--timeout", type=float, default=1800, help="per drain (s)")
    parser.add_argument(
        "--pg-cluster",
        action="store_true",
        help="run against a PostgreSQL cluster of its own with production settings"
        " (bench/pg_cluster.py) instead of --database-url",
    )
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="sample pg_stat_activity and Redis during each drain and explain the slowest"
        " requests (bench/stalls.py)",
    )
    parser.add_argument(
        "--server-log",
        type=Path,
        help="PostgreSQL's log, for its checkpoint and lock-wait lines (automatic with"
        " --pg-cluster)",
    )
    args = parser.parse_args()
    args.backlog = args.backlog or [40000, 200000]
    return args


# -- the processes ------------------------------------------------------------------------


def environment(args: argparse.Namespace, name: str = "cli") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUST_")}
    url = make_url(args.database_url)
    if url.get_backend_name() == "postgresql":  # tells the processes' connections apart
        url = url.update_query_dict({"application_name": f"dust-{name}"})
    env.update(
        DUST_DATABASE_URL=url.render_as_string(hide_password=False),
        DUST_BROKER_URL=args.broker_url,
        DUST_RESULT_BACKEND=args.broker_url,
        PYTHONUNBUFFERED="1",
    )
    return env


def processes(args: argparse.Namespace, folder: Path) -> list[procfile.Process]:
    """Every process of the Procfile but the scheduler, as an operator starts them."""
    return [
        procfile.Process(
            name,
            procfile.command(name, path=args.procfile),
            folder / f"{name}.log",
            env=environment(args, name),
            cwd=ROOT,
        )
        for name in procfile.read(args.procfile)
        if name != "beat"
    ]


# -- the clients --------------------------------------------------------------------------


def client(broker_url: str) -> Celery:
    app = Celery("bench-requests", broker=broker_url, backend=broker_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        broker_connection_retry_on_startup=True,
    )
    return app


#: (sent at, epoch s; round trip, s; task id; kind) of every request, for ``--diagnose``.
SENT: list[tuple[float, float, str, str]] = []


def call(app: Celery, task: str, timeout: float = 600, **kwargs: Any) -> tuple[float, Any]:
    """(round trip in seconds, reply) of one request, as the CLI and a store send it."""
    at = time.time()
    started = time.perf_counter()
    result = app.send_task(task, kwargs=kwargs, queue=REQUESTS_QUEUE)
    reply = result.get(timeout=timeout, interval=0.005)
    took = time.perf_counter() - started
    SENT.append((at, took, result.id, task.rsplit(".", 1)[-1]))
    return took, reply


class Checkout:
    """One store front: reserves one at a time, each replacing a shop customer's hold."""

    def __init__(self, app: Celery, customers: int) -> None:
        self.app = app
        self.customers = customers
        self.sent = 0

    def reserve(self) -> float:
        n = self.sent
        self.sent += 1
        c = n % self.customers
        amount = 1 + (n // self.customers) % 2
        took, reply = call(
            self.app,
            "dust.reserve",
            cart_id=f"cart_{SHOP}{c}",
            customer_id=f"{SHOP}{c}",
            amount=amount,
            kind="dust",
        )
        if reply.get("status") != "reserved":
            sys.exit(f"unexpected reserve reply: {reply}")
        return took

    def until(self, done: threading.Event) -> list[float]:
        latencies = []
        while not done.is_set():
            latencies.append(self.reserve())
        return latencies


class Admin(threading.Thread):
    """A second client during a drain: credit, debit, claim in turn, 50 ms apart."""

    def __init__(self, app: Celery, customers: int, codes: list[str], done: threading.Event):
        super().__init__(daemon=True)
        self.app, self.customers, self.codes, self.done = app, customers, codes, done
        self.latencies: dict[str, list[float]] = {"credit": [], "debit": [], "claim": []}
        self.error: str | None = None

    def one(self, kind: str, n: int) -> float:
        customer = f"{SHOP}{n % self.customers}"
        if kind == "claim":
            if not self.codes:
                return -1
            code = self.codes.pop()
            took, reply = call(
                self.app,
                "dust.admin.claim",
                code=code,
                customer_id=customer,
                actor="bench",
            )
        else:
            took, reply = call(
                self.app,
                "dust.admin.adjust",
                customer_id=customer,
                direction=kind,
                amount=1,
                kind="dust",
                reason="bench",
                actor="bench",
            )
        if reply.get("status") != "ok":
            self.error = f"{kind}: {reply}"
        return took

    def run(self) -> None:
        n = 0
        while not self.done.is_set():
            kind = ("credit", "debit", "claim")[n % 3]
            took = self.one(kind, n)
            if took >= 0:
                self.latencies[kind].append(took)
            n += 1
            self.done.wait(0.05)


def cli_credit(args: argparse.Namespace, customer: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [str(BIN / "dust"), "credit", customer, "1", "--kind", "dust", "--reason", "bench"],
        cwd=ROOT,
        env=environment(args),
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def no_garbage_collection() -> None:
    """No garbage collection of this benchmark's own during the phase that follows: a full
    collection walked every object the client had made (Celery, Redis, SQLAlchemy, the
    replies so far) and stopped its threads for up to 350 ms in the middle of a drain,
    which the round trips timed as if Dust had been slow (BENCHMARKS.md). Freezing what
    exists (as Dust's workers do at start, ``dust.worker.app``) left pauses of 150 ms, so
    the collector is off until :func:`collect_garbage` (a phase makes a few MB of it)."""
    gc.collect()
    gc.freeze()
    gc.disable()


def collect_garbage() -> None:
    gc.enable()
    gc.collect()


# -- the events ---------------------------------------------------------------------------


def committed(engine: Engine, tag: str) -> int:
    with engine.connect() as connection:
        return connection.scalar(
            text("SELECT COUNT(*) FROM dust_events WHERE event_id LIKE :p"), {"p": f"evt_{tag}%"}
        )


def watch_drain(
    engine: Engine,
    r: redis.Redis,
    tag: str,
    n: int,
    done: threading.Event,
    timeout: float,
    alive: Callable,
) -> threading.Thread:
    """Sets ``done`` once the ``n`` events tagged ``tag`` are committed. Counting them is a
    scan of a table of hundreds of thousands of rows, so it waits for the queue to be empty
    first (a Redis LLEN): a count every 0.1 s through the drain took a third of a core."""

    def run() -> None:
        deadline = time.monotonic() + timeout
        while r.llen("dust.events") and time.monotonic() < deadline and alive():
            time.sleep(0.1)
        while committed(engine, tag) < n:
            if time.monotonic() > deadline or not alive():
                print(f"!! drain of {tag} incomplete after {timeout}s or a process stopped")
                break
            time.sleep(0.1)
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def wal_position(engine: Engine) -> int:
    """Bytes of WAL the server has written since it was created."""
    with engine.connect() as connection:
        return int(connection.scalar(text("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")))


def last_commit(engine: Engine, tag: str) -> float:
    with engine.connect() as connection:
        at = connection.scalar(
            text("SELECT MAX(processed_at) FROM dust_events WHERE event_id LIKE :p"),
            {"p": f"evt_{tag}%"},
        )
    return epoch(at)


def guest_refunds(r: redis.Redis, tmpl: dict[str, Any], n: int) -> None:
    """Guest orders refunded to store credit: each leaves an anonymous account to claim."""
    messages = []
    for i in range(n):
        order = {"id": f"order_g{i}", "customer_id": None, "currency_code": "usd", "total": 4000}
        refund = {
            "id": f"refund_g{i}",
            "order_id": f"order_g{i}",
            "amount": 1200,
            "currency_code": "usd",
            "to_store_credit": True,
        }
        for name, data, eid in (("order.placed", order, "go"), ("refund.created", refund, "gr")):
            envelope = {"id": f"evt_{eid}{i}", "name": name, "occurred_at": OCCURRED, "data": data}
            messages.append(wire(tmpl, "dust.handle_event", envelope))
    push_all(r, messages)


OCCURRED = "2026-11-20T10:00:00Z"


def claim_codes(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.scalars(
                text("SELECT code FROM dust_accounts WHERE customer_id IS NULL AND balance > 0")
            )
        )


# -- the report ---------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def summary(latencies: list[float], idle_median: float) -> str:
    if not latencies:
        return "no request"
    p50, p99, top = percentile(latencies, 50), percentile(latencies, 99), max(latencies)
    return (
        f"{len(latencies)} requests: p50 {ms(p50)}, p99 {ms(p99)}, max {ms(top)}"
        f"  (p99 = {p99 / idle_median:.1f}x idle median {ms(idle_median)})"
    )


def first_line(latencies: list[float], idle_median: float) -> str:
    first = latencies[:FIRST]
    if not first:
        return "no request"
    worst = max(first)
    return (
        f"slowest of the first {len(first)}: {ms(worst)} = {worst / idle_median:.1f}x the idle"
        f" median (target <= 20x); first {ms(first[0])}"
    )


def admin_lines(admin: Admin, idle_median: float) -> list[str]:
    lines = []
    for kind, values in admin.latencies.items():
        if values:
            lines.append(f"  dust {kind:<6} (task round trip) {summary(values, idle_median)}")
    if admin.error:
        lines.append(f"  !! admin error: {admin.error}")
    return lines


def main() -> None:
    args = parse_args()
    if not args.pg_cluster:
        run(args, Path(tempfile.mkdtemp(prefix="dust-requests-")))
        return
    folder = Path(tempfile.mkdtemp(prefix="dust-requests-"))
    folder.chmod(0o755)  # the server (user postgres) writes its log here
    args.server_log = folder / "postgresql.log"
    with production_cluster(database="dust_perf", log=args.server_log) as url:
        args.database_url = url
        run(args, folder)


def run(args: argparse.Namespace, folder: Path) -> None:
    if urlsplit(args.broker_url).path.strip("/") in ("", "0", "15"):
        sys.exit("refusing Redis database 0 or 15: pass --broker-url redis://host:6379/N")
    problem = procfile.unreachable(args.database_url, args.broker_url)
    if problem:
        sys.exit(problem)
    print(f"Dust checkout requests beside events, {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(f"git:      {git_state()}")
    print(f"machine:  {os.cpu_count()} cpus, {load_average()} (shared machine)")
    for name, words in procfile.read(args.procfile).items():
        if name != "beat":
            print(f"process:  {name}: {' '.join(words)}")
    print(f"database: {make_url(args.database_url).render_as_string(hide_password=True)}")
    print(f"broker:   {args.broker_url}")

    reset_database(args.database_url)
    engine = create_engine(args.database_url)
    biggest = max([args.burst, *args.backlog])
    customers = max(1, -(-biggest // args.orders_per_customer))
    create_customers(engine, customers)
    r = redis.Redis.from_url(args.broker_url)
    r.flushdb()
    tmpl = template(args.broker_url)
    app = client(args.broker_url)
    running = processes(args, folder)

    def alive() -> bool:
        return all(p.running() for p in running)

    try:
        procfile.start_all(running)
        # Shop customers with dust to reserve, and anonymous accounts to claim.
        for c in range(args.shop_customers):
            _, reply = call(
                app,
                "dust.admin.adjust",
                customer_id=f"{SHOP}{c}",
                direction="credit",
                amount=1_000_000,
                kind="dust",
                reason="bench",
                actor="bench",
                create=True,
            )
            assert reply.get("status") == "ok", reply
        guest_refunds(r, tmpl, args.claims)
        deadline = time.monotonic() + 300
        while committed(engine, "g") < 2 * args.claims and time.monotonic() < deadline:
            time.sleep(0.2)
        codes = claim_codes(engine)
        print(f"setup:    {args.shop_customers} shop customers, {len(codes)} codes to claim")

        checkout = Checkout(app, args.shop_customers)
        for _ in range(20):  # warm-up: connections, first queries
            checkout.reserve()
        no_garbage_collection()
        idle = [checkout.reserve() for _ in range(args.idle)]
        idle_median = percentile(idle, 50)
        print(f"\nidle [{load_average()}]")
        print(f"  reserve {summary(idle, idle_median)}")
        admin_idle = Admin(app, args.shop_customers, codes, threading.Event())
        for n in range(30):
            kind = ("credit", "debit", "claim")[n % 3]
            took = admin_idle.one(kind, n)
            if took >= 0:
                admin_idle.latencies[kind].append(took)
        print("\n".join(admin_lines(admin_idle, idle_median)))
        if args.cli:
            idle_cli = [cli_credit(args, f"{SHOP}0") for _ in range(3)]
            print(f"  dust credit command: {', '.join(ms(x) for x in idle_cli)}")

        def drain(tag: str, n: int, started: float, cli: bool) -> None:
            no_garbage_collection()
            first_sent = len(SENT)
            wal_before = wal_position(engine)
            sampler = None
            if args.diagnose:
                sampler = Sampler(args.database_url, args.broker_url)
                sampler.start()
            done = threading.Event()
            watcher = watch_drain(engine, r, tag, n, done, args.timeout, alive)
            admin = Admin(app, args.shop_customers, codes, done)
            admin.start()
            cli_times: list[float] = []
            if cli:
                cli_thread = threading.Thread(
                    target=lambda: cli_times.extend(cli_credit(args, f"{SHOP}1") for _ in range(3)),
                    daemon=True,
                )
                cli_thread.start()
            latencies = checkout.until(done)
            watcher.join()
            admin.join()
            if sampler is not None:
                sampler.stop()
            collect_garbage()
            rate = n / max(1e-9, last_commit(engine, tag) - started)
            print(f"  {first_line(latencies, idle_median)}")
            print(f"  reserve over the drain: {summary(latencies, idle_median)}")
            print("\n".join(admin_lines(admin, idle_median)))
            if cli:
                cli_thread.join()
                print(f"  dust credit command: {', '.join(ms(x) for x in cli_times)}")
            print(f"  drain: {n} events at {rate:.1f} events/s  [{load_average()}]")
            wal = wal_position(engine) - wal_before
            print(
                f"  WAL written during the drain: {wal / 2**20:.0f} MiB,"
                f" {wal / n / 1024:.1f} KiB per event (the whole server's)"
            )
            if sampler is not None:
                print("  where the slowest requests' time went (ms):")
                lines = explain(
                    SENT[first_sent:],
                    sampler,
                    folder / "requests.log",
                    args.server_log,
                    threshold=max(0.05, 5 * idle_median),
                )
                print("\n".join(lines))
                for line in checkpoints(args.server_log, started - 1, time.time()):
                    print(f"  server: {line[:230]}")

        if args.burst:
            print(f"\nburst: {args.burst} order.placed pushed while the processes run")
            messages = [
                wire(tmpl, "dust.handle_event", order_placed("b", o, customers))
                for o in range(args.burst)
            ]
            started, _ = push_all(r, messages)
            drain("b", args.burst, started, False)

        for k, backlog in enumerate(args.backlog):
            tag = f"r{k}_"
            messages = [
                wire(tmpl, "dust.handle_event", order_placed(tag, o, customers))
                for o in range(backlog)
            ]
            procfile.stop_all(running)
            push_all(r, messages)
            print(
                f"\nrestart on a backlog of {backlog} order.placed (queued {r.llen('dust.events')})"
            )
            procfile.start_all(running)
            drain(tag, backlog, time.time(), args.cli and k == 0)
    finally:
        procfile.stop_all(running)
        engine.dispose()
    print(f"\nlogs: {folder}")
    print(f"finished {datetime.now(UTC):%H:%M:%S} UTC, {load_average()}")


if __name__ == "__main__":
    main()
