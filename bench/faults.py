"""Fault harness: a generated commerce workload under kill -9, Redis and database faults.

One command, bounded time, stops by itself. It starts its own Redis (``redis-server`` on a
free loopback port, AOF with ``appendfsync always`` in a temp dir, so a restart loses
nothing the publisher was told is stored), its own PostgreSQL database (created, migrated,
dropped at the end), and the Procfile's processes (``dust.worker.procfile``): 2+ events workers
and a requests worker. A publisher that does not import the project (a bare Celery client)
publishes customers, orders, refunds and cancels, each order's events in shuffled order,
some envelopes twice; beside it a checkout client sends admin credits (with idempotency
keys) and cart reserves / releases on ``dust.requests``, sending a request again when its
reply is late. Meanwhile, on a timer:

* kill -9 of a process's main process (its pool is then killed too, like a machine crash;
  it is started again) and of single pool children; every third kill is of the requests
  process;
* kill -9 and restart of Redis;
* ``pg_terminate_backend`` of every connection of the workers (``--pg-restarts`` also
  restarts the PostgreSQL server, shared with other users: off by default).

Then: every event applied exactly once in effect, every balance equal to an independent
model computed from the events alone, no available balance ever seen negative, ``dust
reconcile`` clean, each request customer's balance the sum of the credits answered and
nothing held once every cart is released. It prints a summary and exits 0 only when lost,
duplicated and mismatches (of events and of requests) are all 0::

    .venv/bin/python bench/faults.py --short                      # CI form, ~1 minute
    .venv/bin/python bench/faults.py --events 100000 --kills 20 --redis-restarts 3 \\
        --db-interruptions 3 --rate 150 --seed 1  # the full run: ~17 min here

``--mix`` publishes the mixed workload (``generate_mix``: customers holding a welcome
bonus, orders charging dust, refunds, cancels, new customers; ``--hot-share``: a share of
the orders on one customer). The summary counts the deadlocks PostgreSQL detected in the
run's database. ``--json`` prints the summary as one JSON line as well.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from sqlalchemy import bindparam, create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dust.worker import procfile  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUEUE = "dust.events"
VISIBILITY_TIMEOUT = 10
FINAL = ("processed", "ignored")
OCCURRED_AT = "2026-11-20T10:00:00Z"  # lots expire a year later: nothing expires here


# -- the workload and its independent model -------------------------------------------------


def generate(events: int, seed: int, run: str) -> list[dict[str, Any]]:
    """About ``events`` envelopes: customers, orders, 0-2 refunds, some cancels; each
    order's events shuffled, orders interleaved in windows."""
    rng = random.Random(seed)
    groups: list[list[dict[str, Any]]] = []
    count = 0
    c = 0
    while count < events:
        customer = f"cus_{run}_{c}"
        group = [envelope(f"evt_{run}_c{c}", "customer.created", {"id": customer})]
        for o in range(rng.randint(1, 4)):
            order = f"order_{run}_{c}_{o}"
            total = rng.randint(100, 50_000)
            shipping = rng.randint(0, min(2_000, total))
            events_of_order = [
                envelope(
                    f"evt_{run}_o{c}_{o}",
                    "order.placed",
                    {
                        "id": order,
                        "customer_id": customer,
                        "currency_code": "usd",
                        "total": total,
                        "shipping_total": shipping,
                    },
                )
            ]
            left = total  # the refunds of an order never pass what it was paid
            for r in range(rng.choice((0, 0, 1, 1, 2))):
                if left < 1:
                    break
                amount = rng.randint(1, left)
                left -= amount
                events_of_order.append(
                    envelope(
                        f"evt_{run}_r{c}_{o}_{r}",
                        "refund.created",
                        {
                            "id": f"ref_{run}_{c}_{o}_{r}",
                            "order_id": order,
                            "customer_id": customer,
                            "amount": amount,
                            "currency_code": "usd",
                            "to_store_credit": rng.random() < 0.6,
                        },
                    )
                )
            if rng.random() < 0.15:
                events_of_order.append(
                    envelope(f"evt_{run}_x{c}_{o}", "order.canceled", {"id": order})
                )
            rng.shuffle(events_of_order)
            group.extend(events_of_order)
        rng.shuffle(group)  # customer.created anywhere among its orders' events
        groups.append(group)
        count += len(group)
        c += 1
    stream: list[dict[str, Any]] = []
    for start in range(0, len(groups), 20):  # interleave the events of 20 customers
        window = [e for g in groups[start : start + 20] for e in g]
        rng.shuffle(window)
        stream.extend(window)
    return stream


#: ``--mix``: each customer created before the stream holds this welcome bonus (a rule in
#: force), so the orders charging dust always find it, in whatever order they arrive.
WELCOME = 100_000


def generate_mix(
    events: int, seed: int, run: str, hot_share: float = 0.0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The mixed workload: ``(before, stream)``. ``before``: the ``customer.created`` of
    the customers who hold a balance (the welcome bonus), applied before the faults. The
    stream: about ``events`` envelopes, three in four an ``order.placed`` (one in five of
    them charging 1-300 dust of a customer's balance), about 15 % refunds (half to store
    credit), 5 % cancels, 5 % new customers (created among their order's events); each
    order's events shuffled, orders interleaved in windows. With ``hot_share``, that share
    of the orders is of one customer."""
    rng = random.Random(seed)
    holders = [f"cus_{run}_s{k}" for k in range(max(20, events // 20))]
    before = [
        envelope(f"evt_{run}_s{k}", "customer.created", {"id": customer})
        for k, customer in enumerate(holders)
    ]
    units: list[list[dict[str, Any]]] = []
    count = 0
    o = 0
    while count < events:
        unit: list[dict[str, Any]] = []
        if rng.random() < 0.07:
            customer = f"cus_{run}_n{o}"
            unit.append(envelope(f"evt_{run}_c{o}", "customer.created", {"id": customer}))
            dust = 0
        else:
            customer = holders[0] if rng.random() < hot_share else rng.choice(holders)
            dust = rng.randint(1, 300) if rng.random() < 0.2 else 0
        order = f"order_{run}_{o}"
        total = rng.randint(400, 50_000)
        shipping = rng.randint(0, min(2_000, total - dust))
        data = {
            "id": order,
            "customer_id": customer,
            "currency_code": "usd",
            "total": total,
            "shipping_total": shipping,
        }
        if dust:
            data["dust_total"] = dust
        unit.append(envelope(f"evt_{run}_o{o}", "order.placed", data))
        left = total - dust  # the money cap: what was paid in money
        if rng.random() < 0.2 and left >= 1:
            amount = rng.randint(1, left)
            refund = {
                "id": f"ref_{run}_{o}",
                "order_id": order,
                "customer_id": customer,
                "amount": amount,
                "currency_code": "usd",
                "to_store_credit": rng.random() < 0.5,
            }
            unit.append(envelope(f"evt_{run}_r{o}", "refund.created", refund))
        if rng.random() < 0.07:
            unit.append(envelope(f"evt_{run}_x{o}", "order.canceled", {"id": order}))
        rng.shuffle(unit)
        units.append(unit)
        count += len(unit)
        o += 1
    stream: list[dict[str, Any]] = []
    for start in range(0, len(units), 20):  # interleave the events of 20 orders
        window = [e for u in units[start : start + 20] for e in u]
        rng.shuffle(window)
        stream.extend(window)
    return before, stream


def envelope(id: str, name: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"id": id, "name": name, "occurred_at": OCCURRED_AT, "data": data}


def model(stream: list[dict[str, Any]], welcome: int = 0) -> dict[str, dict[str, int]]:
    """Expected dust and usd store credit of every customer, from the events alone
    (docs/CONTRACT.md §3.3.3, rate 0.01, redeem value 1): each customer created holds the
    ``welcome`` bonus; an order charges its ``dust_total`` and earns floor(base * rate)
    with base = total - shipping - dust_total; refunds to store credit are credited; after
    refunds an order keeps floor(max(0, base - refunded) * rate); a canceled order charges
    nothing and keeps no dust."""
    orders: dict[str, dict[str, Any]] = {}
    refunded: Counter[str] = Counter()
    canceled: set[str] = set()
    credit: Counter[str] = Counter()
    customers: set[str] = set()
    for e in {e["id"]: e for e in stream}.values():
        d = e["data"]
        if e["name"] == "customer.created":
            customers.add(d["id"])
        elif e["name"] == "order.placed":
            orders[d["id"]] = d
        elif e["name"] == "refund.created":
            refunded[d["order_id"]] += d["amount"]
            if d["to_store_credit"]:
                credit[d["customer_id"]] += d["amount"]
        elif e["name"] == "order.canceled":
            canceled.add(d["id"])
    dust: Counter[str] = Counter({c: welcome for c in customers})
    for order_id, d in orders.items():
        if order_id in canceled:
            continue
        charged = d.get("dust_total", 0)
        base = max(0, d["total"] - d["shipping_total"] - charged)
        dust[d["customer_id"]] += max(0, base - refunded[order_id]) * 1 // 100 - charged
    return {c: {"dust": dust[c], "usd": credit[c]} for c in customers}


# -- services ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.folder), "--appendonly", "yes",
                "--appendfsync", "always", "--save", "", "--protected-mode", "yes",
            ],
            stdout=(self.folder / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    # Loading the AOF answers -LOADING until done.
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start: see redis.log")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill()


def worker(name: str, folder: Path, env: dict[str, str], concurrency: int) -> procfile.Process:
    """A process of the Procfile's: ``worker`` (events and jobs) or ``requests``, with a
    node name of its own (and the pool size of ``--concurrency`` for events workers)."""
    kind = "requests" if name.endswith("requests") else "worker"
    extra = [] if kind == "requests" else ["--concurrency", str(concurrency)]
    command = procfile.command(kind, *extra, "--hostname", f"{name}@%h")
    return procfile.Process(name, command, folder / f"{name}.log", env=env, cwd=ROOT)


class Checkout(threading.Thread):
    """A store and an operator beside the events: admin credits (each with an idempotency
    key) and reserves / releases of carts, for customers of their own (``req_N``, outside
    the event stream and its model), on ``dust.requests``. A request without a reply in
    time is sent again, as a client does: the credit's key and the cart make a second
    delivery a no-op. Exactly once in effect: each customer's balance is the sum of the
    credits answered, and once every cart is released nothing is held."""

    CUSTOMERS = 10
    REPLY_SECONDS = 30

    def __init__(self, url: str, run_id: str, run: Run) -> None:
        super().__init__(daemon=True)
        self.client = Celery("faults-checkout", broker=url, backend=url)
        self.client.conf.update(
            task_serializer="json",
            accept_content=["json"],
            result_accept_content=["json"],
            broker_connection_retry=True,
        )
        self.run_id, self.run_state = run_id, run
        self.stopping = threading.Event()
        self.credited: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.resent = 0
        self.errors: list[str] = []
        self.round_trips: list[float] = []

    def request(self, task: str, **kwargs: Any) -> dict[str, Any]:
        """Send until a reply comes (the same request each time)."""
        while True:
            started = time.monotonic()
            try:
                result = self.client.send_task(
                    task, kwargs=kwargs, queue="dust.requests", retry=False
                )
                reply = result.get(timeout=self.REPLY_SECONDS)
                self.round_trips.append(time.monotonic() - started)
                self.answered[task] += 1
                return reply
            except Exception as exc:  # no reply in time, broker down: the same again
                self.resent += 1
                if self.resent % 20 == 1:
                    self.run_state.say(f"{task}: {type(exc).__name__}; sent again")
                time.sleep(0.2)

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            customer = f"req_{n % self.CUSTOMERS}"
            reply = self.request(
                "dust.admin.adjust",
                customer_id=customer,
                direction="credit",
                amount=3,
                kind="dust",
                reason="faults",
                actor="faults",
                idempotency_key=f"{self.run_id}-{n}",
                create=True,
            )
            if reply.get("status") == "ok":
                self.credited[customer] += 3
            else:
                self.errors.append(f"credit {n}: {reply}")
            reply = self.request(
                "dust.reserve", cart_id=f"rc_{customer}", customer_id=customer, amount=1 + n % 3,
                kind="dust",
            )  # fmt: skip
            if reply.get("status") not in ("reserved", "rejected"):
                self.errors.append(f"reserve {n}: {reply}")
            if n % 4 == 3:
                self.request("dust.release", cart_id=f"rc_{customer}")
            n += 1
            self.stopping.wait(0.1)

    def finish(self) -> None:
        self.stopping.set()
        self.join()
        for c in range(self.CUSTOMERS):
            self.request("dust.release", cart_id=f"rc_req_{c}")

    def check(self, engine: Any) -> dict[str, Any]:
        with engine.connect() as c:
            found = dict(
                c.execute(
                    text(
                        "SELECT customer_id, balance FROM dust_accounts"
                        " WHERE kind = 'dust' AND customer_id LIKE 'req\\_%'"
                    )
                ).all()
            )
            held = int(
                c.scalar(
                    text(
                        "SELECT COALESCE(SUM(held), 0) FROM dust_accounts"
                        " WHERE customer_id LIKE 'req\\_%'"
                    )
                )
                or 0
            )
        wrong = {
            customer: {"credited": want, "balance": found.get(customer, 0)}
            for customer, want in self.credited.items()
            if found.get(customer, 0) != want
        }
        trips = sorted(self.round_trips) or [0.0]
        return {
            "requests_answered": dict(self.answered),
            "requests_sent_again": self.resent,
            "request_errors": self.errors[:5],
            "request_mismatches": len(wrong) + (1 if held else 0),
            "request_mismatch_examples": {**dict(list(wrong.items())[:5]), "held": held},
            "request_seconds_p50_max": [
                round(trips[len(trips) // 2], 3),
                round(trips[-1], 3),
            ],
        }


# -- the run -------------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    folder: Path
    faults: Counter[str] = field(default_factory=Counter)
    redelivery: list[tuple[str, float]] = field(default_factory=list)
    pending_crashes: list[tuple[str, float, set[str]]] = field(default_factory=list)
    negative_seen: int = 0
    publish_retries: int = 0
    log: list[str] = field(default_factory=list)

    def say(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        self.log.append(line)
        if not self.args.quiet:
            print(line, flush=True)


def held_event_ids(r: redis.Redis) -> set[str]:
    """Event ids of the messages delivered and not yet acknowledged."""
    ids = set()
    for value in r.hvals("unacked"):
        try:
            payload = json.loads(value)[0]
            body = json.loads(base64.b64decode(payload["body"]))
            ids.add(body[0][0]["id"])
        except (ValueError, KeyError, IndexError, TypeError):
            continue
    return ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--kills", type=int, default=10, help="kill -9 of workers/children")
    parser.add_argument("--redis-restarts", type=int, default=2)
    parser.add_argument("--db-interruptions", type=int, default=2)
    parser.add_argument("--pg-restarts", type=int, default=0, help="restart PostgreSQL (shared!)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--requests-workers",
        type=int,
        default=1,
        help="processes of the Procfile's requests line (0: events workers only, no requests)",
    )
    parser.add_argument("--rate", type=float, default=250, help="events published per second")
    parser.add_argument("--duplicates", type=float, default=0.05, help="share republished")
    parser.add_argument("--timeout", type=float, default=0, help="give up after (s)")
    parser.add_argument(
        "--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument(
        "--mix",
        action="store_true",
        help="the mixed workload: customers holding a balance (a welcome bonus), orders"
        " charging dust, refunds, cancels and new customers (generate_mix)",
    )
    parser.add_argument(
        "--hot-share", type=float, default=0.0, help="with --mix: share of orders of one customer"
    )
    parser.add_argument("--short", action="store_true", help="the CI form (about a minute)")
    parser.add_argument("--json", action="store_true", help="also print the summary as JSON")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the database and logs")
    args = parser.parse_args(argv)
    if args.short:
        args.events, args.kills, args.redis_restarts = 400, 3, 1
        args.db_interruptions, args.pg_restarts, args.rate = 1, 0, 25
    if args.short and not args.timeout:
        args.timeout = 180
    if not args.timeout:
        # Publishing, then the backlog at no less than 20 events/s, plus start-up.
        args.timeout = max(args.events / args.rate, args.events / 20) * 1.5 + 300
    folder = Path(tempfile.mkdtemp(prefix="dust-faults-"))
    run = Run(args, folder)
    try:
        summary = execute(run)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print_summary(summary)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    ok = summary["lost"] == summary["duplicated"] == summary["mismatches"] == 0
    ok = ok and summary["negative_available_seen"] == 0 and summary["reconcile_clean"]
    ok = ok and not summary["not_final"] and not summary.get("request_mismatches")
    ok = ok and not summary.get("request_errors")
    return 0 if ok else 1


def execute(run: Run) -> dict[str, Any]:
    args = run.args
    started = time.monotonic()
    hard_deadline = started + args.timeout
    run_id = f"{args.seed}x{os.getpid()}"
    database = f"dust_faults_{os.getpid()}"
    admin = create_engine(args.admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    db_url = make_url(args.admin_url).set(database=database)
    database_url = db_url.render_as_string(hide_password=False)
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        c.execute(text(f'CREATE DATABASE "{database}"'))
    server = RedisServer(run.folder)
    server.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUST_")}
    env.update(
        DUST_DATABASE_URL=database_url,
        DUST_BROKER_URL=server.url,
        DUST_RESULT_BACKEND=server.url,
        DUST_VISIBILITY_TIMEOUT_SECONDS=str(VISIBILITY_TIMEOUT),
        DUST_EARN_RATE="0.01",
        DUST_CLAWBACK_POLICY="debt",
        PYTHONUNBUFFERED="1",
    )
    subprocess.run(
        [str(BIN / "dust"), "db", "upgrade"], cwd=ROOT, env=env, check=True,
        capture_output=True, timeout=120,
    )  # fmt: skip
    names = [f"faults{n}" for n in range(args.workers)]
    names += [f"faults{n}-requests" for n in range(args.requests_workers)]
    workers = [worker(name, run.folder, env, args.concurrency) for name in names]
    checkout: Checkout | None = None
    engine = create_engine(database_url, pool_pre_ping=True, pool_size=2)
    before: list[dict[str, Any]] = []
    if args.mix:
        before, stream = generate_mix(args.events, args.seed, run_id, args.hot_share)
        subprocess.run(
            [str(BIN / "dust"), "rules", "add", "welcome-bonus", str(WELCOME)]
            + ["--starts", "2026-01-01", "--reason", "faults", "--actor", "faults"],
            cwd=ROOT, env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    else:
        stream = generate(args.events, args.seed, run_id)
    expected = model(before + stream, WELCOME if args.mix else 0)
    rng = random.Random(args.seed + 1)
    # Duplicates: copies of earlier envelopes, published again later in the stream.
    plan: list[dict[str, Any]] = []
    for i, e in enumerate(stream):
        plan.append(e)
        if i and rng.random() < args.duplicates:
            plan.append(stream[rng.randrange(i)])
    # Faults at random moments of the publishing (by share of the plan published).
    kinds = (
        ["kill"] * args.kills
        + ["redis"] * args.redis_restarts
        + ["db"] * args.db_interruptions
        + ["pg_restart"] * args.pg_restarts
    )
    schedule = sorted((rng.uniform(0.05, 0.95), kind) for kind in kinds)
    summary: dict[str, Any] = {}
    try:
        for w in workers:
            w.start()
        wait_ready(workers, run)
        client = Celery("faults-publisher", broker=server.url)
        client.conf.update(
            task_serializer="json", accept_content=["json"], broker_connection_retry=True
        )
        r = redis.Redis.from_url(server.url, socket_timeout=5, socket_connect_timeout=2)
        if before:
            for e in before:
                publish(client, e, run)
            run.say(f"{len(before)} customers created before the faults, with their balance")
            drain(run, engine, r, [e["id"] for e in before], hard_deadline, workers)
        if args.requests_workers:
            checkout = Checkout(server.url, run_id, run)
            checkout.start()
        run.say(
            f"publishing {len(plan)} envelopes ({len(stream)} events) at {args.rate}/s;"
            f" {len(schedule)} faults; events workers {args.workers} x {args.concurrency},"
            f" requests workers {args.requests_workers}"
        )
        t0 = time.monotonic()
        next_fault = 0
        last_check = 0.0
        for i, e in enumerate(plan):
            # Pace: event i goes out at t0 + i / rate.
            delay = t0 + i / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            publish(client, e, run)
            while next_fault < len(schedule) and i >= schedule[next_fault][0] * len(plan):
                inject(schedule[next_fault][1], run, workers, server, admin, database, rng, r)
                next_fault += 1
            if time.monotonic() - last_check > 1:
                last_check = time.monotonic()
                observe(run, engine)
                restart_exited(workers, run)
            if time.monotonic() > hard_deadline:
                raise TimeoutError("publishing ran past --timeout")
            if i and i % 10_000 == 0:
                run.say(f"published {i}/{len(plan)}")
        publish_seconds = time.monotonic() - t0
        run.say(f"published in {publish_seconds:.1f}s; draining")
        ids = [e["id"] for e in before + stream]
        statuses = drain(run, engine, r, ids, hard_deadline, workers)
        elapsed = time.monotonic() - t0
        if checkout is not None:
            checkout.finish()
        summary = check(run, engine, env, expected, before + stream, statuses)
        if checkout is not None:
            summary.update(checkout.check(engine))
        summary.update(
            events=len(before) + len(stream),
            events_before_the_faults=len(before),
            kinds=dict(Counter(e["name"] for e in stream)),
            published=len(plan) + len(before),
            duplicates_published=len(plan) - len(stream) + run.publish_retries,
            publish_seconds=round(publish_seconds, 1),
            seconds=round(elapsed, 1),
            events_per_second=round(len(stream) / elapsed, 1),
            faults=dict(run.faults),
            redelivery_seconds=[(k, round(s, 1)) for k, s in run.redelivery],
            negative_available_seen=run.negative_seen,
            seed=args.seed,
        )
        return summary
    finally:
        if checkout is not None:
            checkout.stopping.set()
        procfile.stop_all(workers, timeout=15)
        server.stop()
        engine.dispose()
        if not args.keep:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


def wait_ready(workers: list[procfile.Process], run: Run, timeout: float = 60) -> None:
    try:
        for w in workers:
            w.wait_ready(timeout)
    except procfile.ProcessFailed as exc:
        raise RuntimeError(str(exc)) from None


def restart_exited(workers: list[procfile.Process], run: Run) -> None:
    """A process that stopped though nobody killed it (the kills restart theirs at once) is
    counted, with its exit code in the log, and started again."""
    for w in workers:
        if w.proc is not None and not w.running():
            run.faults["exited_on_their_own"] += 1
            run.say(f"{w.name} exited on its own (code {w.proc.returncode}); started again")
            w.start()
            wait_ready([w], run)


def publish(client: Celery, e: dict[str, Any], run: Run) -> None:
    while True:
        try:
            client.send_task("dust.handle_event", args=[e], queue=QUEUE, retry=False)
            return
        except Exception as exc:  # broker down: publish again until it is stored
            run.publish_retries += 1
            if run.publish_retries % 50 == 1:
                run.say(f"publish failed ({type(exc).__name__}); retrying")
            time.sleep(0.2)


def inject(
    kind: str,
    run: Run,
    workers: list[procfile.Process],
    server: RedisServer,
    admin: Any,
    database: str,
    rng: random.Random,
    r: redis.Redis,
) -> None:
    if kind == "kill":
        live = [w for w in workers if w.running()]
        # Every third kill is of a requests process (when there is one), the others of
        # events workers: kills of either process, whatever the seed.
        kills = run.faults["kill_worker_main"] + run.faults["kill_pool_child"]
        requests = [w for w in live if w.name.endswith("requests")]
        events = [w for w in live if not w.name.endswith("requests")]
        w = rng.choice(requests if requests and kills % 3 == 2 else events or live)
        if w.name.endswith("requests"):
            run.faults["kills_of_a_requests_process"] += 1
        children = w.children()
        # Alternate: a whole worker (main process first), then one pool child.
        if run.faults["kill_worker_main"] <= run.faults["kill_pool_child"] or not children:
            held = safe(lambda: held_event_ids(r), set())
            w.kill_main()
            run.faults["kill_worker_main"] += 1
            run.say(f"kill -9 {w.name} main process (+ its pool); {len(held)} unacked in Redis")
            run.pending_crashes.append(("worker_main", time.monotonic(), held))
            w.start()
            wait_ready([w], run)
        else:
            held = safe(lambda: held_event_ids(r), set())
            os.kill(rng.choice(children), signal.SIGKILL)
            run.faults["kill_pool_child"] += 1
            run.say(f"kill -9 a pool child of {w.name}")
            run.pending_crashes.append(("pool_child", time.monotonic(), held))
    elif kind == "redis":
        server.kill()
        time.sleep(rng.uniform(0.5, 2))
        server.start()
        run.faults["redis_restart"] += 1
        run.say("Redis killed (-9) and restarted")
    elif kind == "db":
        with admin.connect() as c:
            n = c.execute(
                text(
                    "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = :d AND pid <> pg_backend_pid()"
                ),
                {"d": database},
            ).scalar()
        run.faults["db_connections_terminated"] += 1
        run.say(f"pg_terminate_backend: {n} connections of {database}")
    elif kind == "pg_restart":
        version = sorted(os.listdir("/etc/postgresql"))[-1]
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
            check=True,
            timeout=120,
        )
        run.faults["postgresql_restart"] += 1
        run.say("PostgreSQL restarted")


def safe(fn: Any, default: Any) -> Any:
    try:
        return fn()
    except Exception:
        return default


def observe(run: Run, engine: Any) -> None:
    """Sample: accounts with a negative available balance; crashes whose in-flight
    messages have all been handled since (their redelivery time)."""
    try:
        with engine.connect() as c:
            run.negative_seen += c.scalar(
                text("SELECT COUNT(*) FROM dust_accounts WHERE balance - held < 0")
            )
            still = []
            for kind, at, held in run.pending_crashes:
                if held:
                    done = c.scalar(
                        text(
                            "SELECT COUNT(*) FROM dust_events WHERE event_id IN :ids"
                            " AND status IN ('processed', 'ignored')"
                        ).bindparams(bindparam("ids", expanding=True)),
                        {"ids": sorted(held)},
                    )
                    if done < len(held):
                        still.append((kind, at, held))
                        continue
                run.redelivery.append((kind, time.monotonic() - at))
            run.pending_crashes = still
    except Exception as exc:  # the database may be interrupted right now
        run.say(f"observe skipped: {type(exc).__name__}")


def drain(
    run: Run,
    engine: Any,
    r: redis.Redis,
    ids: list[str],
    deadline: float,
    workers: list[procfile.Process],
) -> dict[str, str]:
    stmt = text("SELECT event_id, status FROM dust_events WHERE event_id IN :ids").bindparams(
        bindparam("ids", expanding=True)
    )
    last_report = time.monotonic()
    while True:
        observe(run, engine)
        statuses: dict[str, str] = {}
        try:
            with engine.connect() as c:
                for chunk in range(0, len(ids), 5000):
                    statuses.update(dict(c.execute(stmt, {"ids": ids[chunk : chunk + 5000]}).all()))
            queued = r.llen(QUEUE) + r.hlen("unacked")
        except Exception:
            time.sleep(0.5)
            continue
        final = sum(1 for s in statuses.values() if s in FINAL)
        if time.monotonic() - last_report > 30:
            last_report = time.monotonic()
            run.say(f"draining: {final}/{len(ids)} final, {queued} in the broker")
        if final == len(ids) and queued == 0 and not run.pending_crashes:
            return statuses
        if time.monotonic() > deadline:
            run.say(f"drain timed out: {final}/{len(ids)} final, {queued} in the broker")
            return statuses
        for w in workers:
            if not w.running():
                w.start()
        time.sleep(0.5)


def check(
    run: Run,
    engine: Any,
    env: dict[str, str],
    expected: dict[str, dict[str, int]],
    stream: list[dict[str, Any]],
    statuses: dict[str, str],
) -> dict[str, Any]:
    ids = {e["id"] for e in stream}
    lost = sorted(ids - set(statuses))
    not_final = {i: s for i, s in statuses.items() if s not in FINAL}
    with engine.connect() as c:
        dust = dict(
            c.execute(
                text("SELECT customer_id, balance FROM dust_accounts WHERE kind = 'dust'")
            ).all()
        )
        credit = dict(
            c.execute(
                text(
                    "SELECT customer_id, balance FROM dust_accounts"
                    " WHERE kind = 'store_credit' AND currency_code = 'usd'"
                )
            ).all()
        )
        # Exactly once: one store-credit refund entry per refund id, at most one earn and
        # one charge per order, one welcome bonus per customer.
        doubled = c.execute(
            text(
                "SELECT reference_id, reason, COUNT(*) FROM dust_entries e"
                " JOIN dust_accounts a ON a.id = e.account_id"
                " WHERE (a.kind = 'store_credit' AND e.reason = 'refund')"
                "    OR (a.kind = 'dust' AND e.reason IN ('earn', 'spend', 'welcome'))"
                " GROUP BY reference_id, reason HAVING COUNT(*) > 1"
            )
        ).all()
        attempts = c.scalar(text("SELECT COALESCE(MAX(attempts), 0) FROM dust_events"))
        # Deadlocks PostgreSQL detected (and broke by failing one transaction, retried) in
        # this run's database, which is new for each run.
        deadlocks = c.scalar(
            text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        )
    mismatches = []
    for customer, want in expected.items():
        got = {"dust": dust.get(customer, 0), "usd": credit.get(customer, 0)}
        if got != want:
            mismatches.append({"customer": customer, "expected": want, "found": got})
    reconcile = subprocess.run(
        [str(BIN / "dust"), "reconcile", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return {
        "lost": len(lost),
        "lost_ids": lost[:10],
        "not_final": dict(list(not_final.items())[:10]),
        "not_final_count": len(not_final),
        "duplicated": len(doubled),
        "duplicated_refs": [list(map(str, d)) for d in doubled[:10]],
        "mismatches": len(mismatches),
        "mismatch_examples": mismatches[:5],
        "customers": len(expected),
        "statuses": dict(Counter(statuses.values())),
        "max_attempts": attempts,
        "deadlocks": deadlocks,
        "reconcile_clean": reconcile.returncode == 0,
        "reconcile_output": "" if reconcile.returncode == 0 else reconcile.stdout[-2000:],
    }


def print_summary(s: dict[str, Any]) -> None:
    faults = ", ".join(f"{k} {v}" for k, v in sorted(s.get("faults", {}).items())) or "none"
    redelivery = defaultdict(list)
    for kind, seconds in s.get("redelivery_seconds", []):
        redelivery[kind].append(seconds)
    print("---- fault harness summary ----")
    print(
        f"events {s.get('events')} (published {s.get('published')}, of which duplicates"
        f" {s.get('duplicates_published')}), customers {s.get('customers')}"
    )
    if s.get("events_before_the_faults"):
        print(
            f"mixed: {s['events_before_the_faults']} customers created (with a balance) before"
            f" the faults, then {s.get('kinds')}"
        )
    print(f"faults: {faults}")
    for kind, values in sorted(redelivery.items()):
        print(
            f"after each {kind} kill, until every message then in flight was applied (s): {values}"
        )
    print(
        f"statuses: {s.get('statuses')}; max attempts {s.get('max_attempts')};"
        f" deadlocks detected by PostgreSQL {s.get('deadlocks')}"
    )
    print(
        f"lost {s.get('lost')}, duplicated {s.get('duplicated')},"
        f" mismatches {s.get('mismatches')}, not final {s.get('not_final_count')},"
        f" negative available seen {s.get('negative_available_seen')},"
        f" reconciliation {'clean' if s.get('reconcile_clean') else 'NOT CLEAN'}"
    )
    print(
        f"time {s.get('seconds')} s ({s.get('events_per_second')} events/s),"
        f" publishing {s.get('publish_seconds')} s"
    )
    if "requests_answered" in s:
        print(
            f"requests answered {s['requests_answered']} (sent again {s['requests_sent_again']},"
            f" round trip p50/max {s['request_seconds_p50_max']} s);"
            f" request mismatches {s['request_mismatches']}"
        )
    for key in (
        "lost_ids",
        "not_final",
        "duplicated_refs",
        "mismatch_examples",
        "request_errors",
    ):
        if s.get(key):
            print(f"{key}: {s[key]}")
    if s.get("reconcile_output"):
        print(s["reconcile_output"])


if __name__ == "__main__":
    sys.exit(main())
