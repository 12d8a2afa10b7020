"""End to end: order.placed throughput and latency, next to the ceilings of Dust's own stack.

One command, one printed report (BENCHMARKS.md explains the figures):

    .venv/bin/python bench/e2e.py              # N = 5000
    .venv/bin/python bench/e2e.py -n 20000 --half-n 5000
    .venv/bin/python bench/e2e.py --pg-cluster    # a cluster of its own (bench/pg_cluster.py)

1. The Procfile's processes (all but ``beat``) are started unchanged (``dust.worker.procfile``), on
   ``DUST_DATABASE_URL`` (default database ``dust_perf``, schema rebuilt with ``dust db
   upgrade``) and ``DUST_BROKER_URL`` (default Redis database 11, flushed). Customers' dust
   accounts exist beforehand, so each ``order.placed`` is: inbox row, order row, account
   lookup, charge check, earn entry, lot. After that setup the database is ``VACUUM
   ANALYZE``d: the planner's statistics are then those autovacuum keeps for a live store's
   database, not those of tables just created and filled (which make it read whole tables).
2. **no-op ceiling**: N ``dust.noop`` messages pushed in one Redis pipeline; timed to the
   last ack (the queue is empty *and* the transport's ``unacked`` hash is empty: with
   ``task_acks_late`` a message leaves ``unacked`` only when its task has returned).
3. **full load**: N ``order.placed`` pushed in one Redis pipeline; events/s from the first
   push to the last ``dust_events.processed_at`` (set just before the commit); latency of
   each event = its ``processed_at`` minus the push instant (all N are published at once,
   so this is mostly queueing).
4. **half load**: ``--half-n`` events published one by one, paced at half the full-load
   rate; each envelope carries ``published_at`` (epoch seconds, an unknown field the inbox
   ignores; it only makes each envelope's content hash unique); latency = ``processed_at``
   minus ``published_at``.
5. **direct ceiling**: the worker is stopped; N ``order.placed`` are applied with
   ``dust.inbox.process_batch`` in batches of ``DUST_EVENT_BATCH_SIZE`` (what a pool
   process runs for a batch; ``dust.inbox.process`` one at a time when it is 1) in 2 OS
   processes (the worker's default pool on 2 cores, events interleaved between them), no
   Celery.

A store's stream instead of new plain orders (``bench/mix.py``, seeded by ``--seed``):
``--mix`` (60 % new plain orders, 15 % orders charging held dust, 15 % refunds, 5 % cancels,
5 % new customers) or ``--only KIND``, for ``--customers`` (1,000) customers holding dust
and store credit, with the orders to refund or cancel placed and the charging carts held
beforehand (not counted); ``--hot-customer`` adds the full load with a tenth of it on one
customer and prints hot / spread time; ``--workers 1,2,4`` runs the full load with that
many events worker processes, each time on a fresh database, and compares the ledgers::

    .venv/bin/python bench/e2e.py -n 20000 --half-n 8000 --mix
    .venv/bin/python bench/e2e.py -n 20000 --mix --hot-customer --workers 1,2,4

Messages are the exact bytes a bare Celery client publishes (a real ``send_task`` gives
the template; each message gets its own task id, body and delivery tag), LPUSHed as kombu
does. The worker's RSS and PSS (parent + pool children, from /proc) are taken before and
after the loads. Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import multiprocessing
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from celery import Celery
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mix  # noqa: E402
from throughput import analyze, reset_database  # noqa: E402

from dust.worker import procfile  # noqa: E402
from dust.worker.settings import get_settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUEUE = "dust.events"
OCCURRED_AT = "2026-11-20T10:00:00Z"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--events", type=int, default=5000, help="N (default 5000)")
    parser.add_argument("--half-n", type=int, help="events of the half-load phase (default N / 2)")
    parser.add_argument("--orders-per-customer", type=int, default=5)
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
    parser.add_argument(
        "--half-rate",
        type=float,
        help="events/s of the half-load phase (default: half the full-load rate, or 40/s)",
    )
    parser.add_argument(
        "--rules",
        action="store_true",
        help="three earn rules in force (a vip group x2, a campaign x1.5, a welcome bonus),"
        " every third customer in the vip group",
    )
    workload = parser.add_argument_group(
        "a store's stream (bench/mix.py): customers with balances, orders placed before"
    )
    workload.add_argument(
        "--mix",
        action="store_true",
        help="60 %% new plain orders, 15 %% orders charging dust (their carts held),"
        " 15 %% refunds (half to store credit), 5 %% cancels, 5 %% new customers",
    )
    workload.add_argument(
        "--only", choices=mix.KINDS, help="one kind of event alone (as in --mix's setup)"
    )
    workload.add_argument(
        "--hot-customer",
        action="store_true",
        help="the full load twice, spread over the customers and with a tenth of it on one"
        " customer: the time of the hot stream over the spread one (target <= 1.5)",
    )
    workload.add_argument("--customers", type=int, default=1000, help="(default 1000)")
    workload.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--workers",
        default="1",
        help="events worker processes (the Procfile's worker line, each its own node); a"
        " list (1,2,4): for each, a fresh database and the same stream, full load only, and"
        " the ledgers compared: the same whatever the number of workers",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        help="pool processes of each events worker (default: the Procfile's, one per core)",
    )
    parser.add_argument("--direct-processes", type=int, default=2)
    parser.add_argument(
        "--procfile", type=Path, default=procfile.PROCFILE, help="another process layout"
    )
    parser.add_argument("--timeout", type=float, default=900, help="per phase (s)")
    parser.add_argument(
        "--skip", action="append", default=[], choices=["noop", "full", "half", "direct"]
    )
    parser.add_argument(
        "--poison",
        choices=["not-kombu", "deep"],
        help="after the full load, the same load again with one malformed item in the middle:"
        " a list item that is not a kombu message, or an envelope nested 500 deep",
    )
    parser.add_argument(
        "--metrics-rounds",
        type=int,
        default=0,
        help="then R rounds of the full load with metrics off and on (DUST_METRICS_PORT),"
        " alternating which goes first, each on a fresh worker: what the metrics cost",
    )
    parser.add_argument(
        "--pg-cluster",
        action="store_true",
        help="run against a PostgreSQL cluster of its own with production settings"
        " (bench/pg_cluster.py) instead of --database-url",
    )
    return parser.parse_args()


# -- the machine -----------------------------------------------------------------------


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def machine(engine: Engine, broker_url: str) -> list[str]:
    with engine.connect() as connection:
        pg = connection.scalar(text("SHOW server_version"))
    info = redis.Redis.from_url(broker_url).info("server")
    mem_kb = int(
        next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1]
    )
    model = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line),
        "?",
    )
    return [
        f"cpus {os.cpu_count()} ({model}), memory {mem_kb / 2**20:.1f} GiB",
        f"PostgreSQL {pg}, Redis {info['redis_version']}, Python {sys.version.split()[0]}",
    ]


# -- the worker ------------------------------------------------------------------------


def worker_env(database_url: str, broker_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUST_")}
    env.update(extra)
    env["DUST_DATABASE_URL"] = database_url
    env["DUST_BROKER_URL"] = broker_url
    # The venv's celery, as `make` / a deployment would have on PATH.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def start_processes(
    database_url: str,
    broker_url: str,
    folder: Path,
    path: Path = procfile.PROCFILE,
    workers: int = 1,
    concurrency: int | None = None,
    **extra: str,
) -> list[procfile.Process]:
    """Every process of the Procfile but the scheduler, unchanged, until each is ready;
    with ``workers`` > 1, that many of the ``worker`` line, each a node of its own
    (``--hostname events<k>@%h``); ``concurrency``: each one's pool size."""
    env = worker_env(database_url, broker_url, **extra)
    processes = []
    for name in procfile.read(path):
        if name == "beat":
            continue
        copies = workers if name == "worker" else 1
        for k in range(copies):
            words: list[str] = []
            if name == "worker" and concurrency:
                words += ["--concurrency", str(concurrency)]
            if copies > 1:
                words += ["--hostname", f"events{k}@%h"]
            label = f"{name}{k}" if copies > 1 else name
            processes.append(
                procfile.Process(
                    label,
                    procfile.command(name, *words, path=path),
                    folder / f"{label}.log",
                    env=env,
                    cwd=ROOT,
                )
            )
    try:
        procfile.start_all(processes)
    except procfile.ProcessFailed as exc:
        procfile.stop_all(processes)
        sys.exit(str(exc))
    return processes


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    for p in pids:
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        pids.extend(int(c) for c in children)
    return pids


def memory(*mains: int) -> str:
    """RSS and PSS (shared pages split between the processes sharing them), parents + children."""
    rss = pss = 0
    pids = [p for main in mains for p in process_tree(main)]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return f"{len(pids)} processes, RSS {rss / 1024:.0f} MiB, PSS {pss / 1024:.0f} MiB"


# -- messages --------------------------------------------------------------------------


def template(broker_url: str) -> dict[str, Any]:
    """The message a bare Celery client publishes, taken off the queue as a template."""
    client = Celery("bench-client", broker=broker_url)
    client.conf.update(task_serializer="json", broker_connection_retry_on_startup=True)
    client.send_task("dust.noop", args=[{}], queue=QUEUE)
    client.close()
    r = redis.Redis.from_url(broker_url)
    raw = r.rpop(QUEUE)
    assert raw is not None and r.llen(QUEUE) == 0
    return json.loads(raw)


def wire(tmpl: dict[str, Any], task: str, arg: Any) -> bytes:
    """``tmpl`` re-addressed: its own task id, body and delivery tag, as send_task makes."""
    task_id = str(uuid.uuid4())
    body = json.dumps(
        [[arg], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    )
    headers = dict(tmpl["headers"], task=task, id=task_id, root_id=task_id)
    headers["argsrepr"] = repr([arg])
    properties = dict(tmpl["properties"], correlation_id=task_id, delivery_tag=str(uuid.uuid4()))
    message = dict(
        tmpl, body=base64.b64encode(body.encode()).decode(), headers=headers, properties=properties
    )
    return json.dumps(message).encode()


def order_placed(tag: str, o: int, customers: int, published_at: float | None = None) -> dict:
    envelope: dict[str, Any] = {
        "id": f"evt_{tag}{o}",
        "name": "order.placed",
        "occurred_at": OCCURRED_AT,
        "data": {
            "id": f"order_{tag}{o}",
            "customer_id": f"cus_{o % customers}",
            "cart_id": f"cart_{tag}{o}",
            "currency_code": "usd",
            "total": 10999 + o % 1000,
            "shipping_total": 999,
            "items": [{"id": f"item_{tag}{o}", "product_id": "prod_1", "total": 10000 + o % 1000}],
        },
    }
    if published_at is not None:
        envelope["published_at"] = published_at
    return envelope


def create_customers(engine: Engine, customers: int) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO dust_accounts (customer_id, kind, balance, held, created_at) "
                "SELECT 'cus_' || c, 'dust', 0, 0, now() FROM generate_series(0, :n - 1) c"
            ),
            {"n": customers},
        )


def create_rules(engine: Engine, customers: int) -> None:
    """Three rules in force at the orders' ``occurred_at``, and a group record for every
    third customer (with its copy on the customer's dust account, as ``customer.created``
    leaves it), so each order.placed earns by the rules and its customer's groups."""
    from decimal import Decimal

    from sqlalchemy.orm import Session

    from dust.ledger import rules

    starts = datetime(2026, 1, 1, tzinfo=UTC)
    with Session(engine) as session, session.begin():
        for kind, fields in [
            (rules.GROUP_MULTIPLIER, {"group_id": "vip", "multiplier": Decimal(2)}),
            (
                rules.CAMPAIGN,
                {"multiplier": Decimal("1.5"), "ends_at": datetime(2027, 1, 1, tzinfo=UTC)},
            ),
            (rules.WELCOME_BONUS, {"amount": 100}),
        ]:
            rules.add_rule(
                session, kind=kind, actor="bench", reason="bench", starts_at=starts, **fields
            )
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO dust_customer_groups"
                " (event_id, customer_id, occurred_at, group_ids, recorded_at)"
                " SELECT 'groups_' || c, 'cus_' || c, '2026-11-01T00:00:00Z', '[\"vip\"]', now()"
                " FROM generate_series(0, :n - 1, 3) c"
            ),
            {"n": customers},
        )
        connection.execute(
            text(
                "UPDATE dust_accounts a SET groups_at = g.occurred_at,"
                " groups_event_id = g.event_id, group_ids = g.group_ids"
                " FROM dust_customer_groups g"
                " WHERE a.kind = 'dust' AND a.customer_id = g.customer_id"
            )
        )


# -- measuring -------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def wait_for_events(
    engine: Engine,
    tag: str,
    n: int,
    timeout: float,
    proc: subprocess.Popen[bytes] | None,
    r: redis.Redis | None = None,
) -> list[tuple[str, str, float]]:
    """(status, envelope, processed_at) of the ``n`` events tagged ``tag``, once all are in.
    With ``r``, the broker says first when its queue and its unacknowledged messages are
    empty (a batch is acked after its commit): counting the inbox's rows ten times a
    second reads the whole table each time, PostgreSQL time taken from the worker."""
    deadline = time.monotonic() + timeout
    pattern = f"evt_{tag}%"
    while r is not None and (r.llen(QUEUE) or r.hlen("unacked")):
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            break  # the count below says how many are in
        time.sleep(0.01)
    while True:
        with engine.connect() as connection:
            done = connection.scalar(
                text("SELECT COUNT(*) FROM dust_events WHERE event_id LIKE :p"), {"p": pattern}
            )
        if done >= n:
            break
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            sys.exit(f"only {done}/{n} events tagged {tag} after {timeout}s")
        time.sleep(0.1)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT status, envelope, processed_at FROM dust_events WHERE event_id LIKE :p"),
            {"p": pattern},
        ).all()
    return [(status, env, epoch(at)) for status, env, at in rows]


def statuses(rows: list[tuple[str, str, float]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for status, _, _ in rows:
        out[status] = out.get(status, 0) + 1
    return out


def latency_line(latencies: list[float]) -> str:
    ms = [1000 * x for x in latencies]
    return (
        f"p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
        f"max {max(ms):.1f} ms, mean {statistics.fmean(ms):.1f} ms"
    )


def push_all(r: redis.Redis, messages: list[bytes]) -> tuple[float, float]:
    pipe = r.pipeline(transaction=False)
    for start in range(0, len(messages), 1000):
        pipe.lpush(QUEUE, *messages[start : start + 1000])
    started = time.time()
    pipe.execute()
    return started, time.time()


def run_noop(r: redis.Redis, tmpl: dict[str, Any], n: int, timeout: float) -> dict[str, Any]:
    messages = [wire(tmpl, "dust.noop", {"i": i}) for i in range(n)]
    started, pushed = push_all(r, messages)
    deadline = time.monotonic() + timeout
    while r.llen(QUEUE) or r.hlen("unacked"):
        if time.monotonic() > deadline:
            sys.exit(f"no-op messages not all acked after {timeout}s")
        time.sleep(0.002)
    elapsed = time.time() - started
    return {"rate": n / elapsed, "elapsed": elapsed, "publish": pushed - started}


def run_full(
    r: redis.Redis,
    engine: Engine,
    tmpl: dict[str, Any],
    envelopes: list[dict[str, Any]],
    tag: str,
    args: Any,
    proc,
) -> dict[str, Any]:
    """``envelopes`` (ids ``evt_<tag>…``) pushed in one pipeline, timed to the last commit."""
    messages = [wire(tmpl, "dust.handle_event", e) for e in envelopes]
    n = len(envelopes)
    started, pushed = push_all(r, messages)
    rows = wait_for_events(engine, tag, n, args.timeout, proc, r)
    last = max(at for _, _, at in rows)
    elapsed = last - started
    return {
        "rate": n / elapsed,
        "elapsed": elapsed,
        "publish": pushed - started,
        "latencies": [at - started for _, _, at in rows],
        "statuses": statuses(rows),
    }


def run_poisoned(
    r: redis.Redis, engine: Engine, tmpl: dict[str, Any], n: int, customers: int, args: Any, proc
) -> dict[str, Any]:
    """The full load again (events tagged ``x``) with one malformed item among them, in
    the middle: what it costs the good ones, and where it went."""
    messages = [wire(tmpl, "dust.handle_event", order_placed("x", o, customers)) for o in range(n)]
    poison_id = f"poison_{uuid.uuid4().hex[:8]}"
    if args.poison == "deep":
        nested: Any = "deep"
        for _ in range(500):
            nested = {"x": nested}
        poison = wire(
            tmpl,
            "dust.handle_event",
            {**order_placed("p", 0, 1), "id": poison_id, "extra": nested},
        )
    else:
        poison = f"not a kombu message {poison_id}".encode()
    messages.insert(n // 2, poison)
    dead_before = int(r.get("dust.dead_letters.count") or 0)
    started, pushed = push_all(r, messages)
    rows = wait_for_events(engine, "x", n, args.timeout, proc, r)
    last = max(at for _, _, at in rows)
    elapsed = last - started
    with engine.connect() as connection:
        fate = connection.execute(
            text("SELECT status, reason FROM dust_events WHERE event_id = :i"), {"i": poison_id}
        ).first()
    dead = int(r.get("dust.dead_letters.count") or 0) - dead_before
    where = f"{fate[0]}: {fate[1]}" if fate else f"{dead} dead-lettered"
    return {
        "rate": n / elapsed,
        "elapsed": elapsed,
        "publish": pushed - started,
        "latencies": [at - started for _, _, at in rows],
        "statuses": statuses(rows),
        "poison": where,
        "alive": proc.poll() is None,
    }


def run_paced(
    r: redis.Redis,
    engine: Engine,
    tmpl: dict[str, Any],
    envelopes: list[dict[str, Any]],
    tag: str,
    rate: float,
    args: Any,
    proc,
) -> dict[str, Any]:
    n = len(envelopes)
    started = time.time()
    behind = 0.0
    for o, envelope in enumerate(envelopes):
        due = started + o / rate
        now = time.time()
        if due > now:
            time.sleep(due - now)
        else:
            behind = max(behind, now - due)
        published = time.time()
        r.lpush(QUEUE, wire(tmpl, "dust.handle_event", {**envelope, "published_at": published}))
    publishing = time.time() - started
    rows = wait_for_events(engine, tag, n, args.timeout, proc, r)
    latencies = [at - json.loads(envelope)["published_at"] for _, envelope, at in rows]
    return {
        "rate": n / publishing,
        "latencies": latencies,
        "statuses": statuses(rows),
        "publisher behind": behind,
    }


def _direct_child(
    database_url: str, envelopes: list[dict], batch: int, ready: Any, go: Any, out: Any
) -> None:
    os.environ["DUST_DATABASE_URL"] = database_url
    sys.path.insert(0, str(ROOT))
    from dust import inbox

    inbox.process({"id": f"warm_{os.getpid()}", "name": "bench.warm-up", "data": {}})
    ready.wait()
    go.wait()
    if batch <= 1:
        for envelope in envelopes:
            inbox.process(envelope)
    else:  # as a pool process applies the worker's batches
        for start in range(0, len(envelopes), batch):
            inbox.process_batch(envelopes[start : start + batch])
    out.put(time.time())


def run_direct(
    engine: Engine,
    database_url: str,
    envelopes: list[dict[str, Any]],
    tag: str,
    processes: int,
    timeout: float,
    batch: int,
) -> dict[str, Any]:
    n = len(envelopes)
    ctx = multiprocessing.get_context("spawn")
    ready, go, out = ctx.Barrier(processes + 1), ctx.Event(), ctx.Queue()
    children = [
        ctx.Process(
            target=_direct_child,
            args=(database_url, envelopes[k::processes], batch, ready, go, out),
        )
        for k in range(processes)
    ]
    for child in children:
        child.start()
    ready.wait(timeout=120)
    started = time.time()
    go.set()
    ends = [out.get(timeout=timeout) for _ in children]
    for child in children:
        child.join()
    rows = wait_for_events(engine, tag, n, 10, None)
    elapsed = max(ends) - started
    return {"rate": n / elapsed, "elapsed": elapsed, "statuses": statuses(rows)}


def main() -> None:
    args = parse_args()
    if args.pg_cluster:
        from pg_cluster import production_cluster

        with production_cluster(database="dust_perf") as url:
            args.database_url = url
            run(args)
    else:
        run(args)


def run(args: argparse.Namespace) -> None:
    if urlsplit(args.broker_url).path.strip("/") in ("", "0", "15"):
        sys.exit("refusing Redis database 0 or 15: pass --broker-url redis://host:6379/N")
    # This process applies what the loads find (bench/mix.py) and the direct ceiling.
    os.environ["DUST_DATABASE_URL"] = args.database_url
    get_settings.cache_clear()
    counts = [int(k) for k in args.workers.split(",")]
    if len(counts) > 1:
        sweep_workers(args, counts)
        return
    n = args.events
    half_n = args.half_n or max(1, n // 2)
    stream_mode = bool(args.mix or args.only or args.hot_customer)
    print(f"Dust end to end, {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC, {load_average()}")

    reset_database(args.database_url)
    engine = create_engine(args.database_url)
    loads: dict[str, tuple[list[dict[str, Any]], str]] = {}
    if stream_mode:
        customers = args.customers
        what = "mixed events" if args.mix else f"{args.only or 'plain'} events"
        if args.rules:
            create_rules(engine, customers)
        shares = mix.shares_for(args.mix, args.only)
        phases = {"full": ("f", n, 0.0), "half": ("h", half_n, 0.0), "direct": ("d", n, 0.0)}
        if args.hot_customer:
            phases["hot"] = ("g", n, 0.1)
        streams = {
            phase: mix.generate(tag, size, shares, customers, args.seed, hot)
            for phase, (tag, size, hot) in phases.items()
            if phase not in args.skip
        }
        began = time.time()
        mix.prepare(customers, list(streams.values()))
        loads = {phase: (s.envelopes, s.tag) for phase, s in streams.items()}
        setup = (
            f"{customers} customers holding {mix.DUST_GRANT} dust and {mix.STORE_CREDIT_GRANT}"
            f" usd of store credit; {sum(len(s.prior) for s in streams.values())} orders"
            f" placed and {sum(len(s.holds) for s in streams.values())} carts held before"
            f" ({time.time() - began:.1f} s, not counted)"
        )
    else:
        customers = max(1, -(-n // args.orders_per_customer))
        what = "order.placed"
        create_customers(engine, customers)
        if args.rules:
            create_rules(engine, customers)
        for phase, tag, size in (("full", "f", n), ("half", "h", half_n), ("direct", "d", n)):
            loads[phase] = ([order_placed(tag, o, customers) for o in range(size)], tag)
        setup = f"{customers} customers' dust accounts pre-created"
    analyze(args.database_url)  # statistics as a live database has them
    r = redis.Redis.from_url(args.broker_url)
    r.flushdb()
    tmpl = template(args.broker_url)
    for line in machine(engine, args.broker_url):
        print(line)
    for name, words in procfile.read(args.procfile).items():
        if name != "beat":
            print(f"{name + ':':<9} {shlex.join(words)}  (the Procfile's line)")
    if counts[0] > 1 or args.concurrency:
        print(
            f"workers:  {counts[0]} events worker processes, pool {args.concurrency or 'default'}"
        )
    print(f"database: {make_url(args.database_url).render_as_string(hide_password=True)}")
    print(f"broker:   {args.broker_url}; {setup}")
    if stream_mode and "full" in loads:
        kinds = mix.generate("f", n, shares, customers, args.seed).kinds
        print(f"stream:   seed {args.seed}, {n} events: {kinds}")
    if args.rules:
        print("rules:    vip x2 (every third customer), campaign x1.5, welcome bonus 100")
    print(f"git:      {git_state()}")

    logs = Path(tempfile.mkdtemp(prefix="dust-e2e-"))
    results: dict[str, dict[str, Any]] = {}
    processes = start_processes(
        args.database_url, args.broker_url, logs, args.procfile, counts[0], args.concurrency
    )
    proc = processes[0].proc  # the events worker: a run stops if it does
    mains = [p.pid for p in processes]
    try:
        print(f"\nworker memory, idle:          {memory(*mains)}")
        if "noop" not in args.skip:
            results["noop"] = res = run_noop(r, tmpl, n, args.timeout)
            print(
                f"no-op ceiling:  {n} dust.noop, {res['rate']:.0f} tasks/s "
                f"({res['elapsed']:.2f} s to the last ack; push {res['publish'] * 1000:.0f} ms)"
                f"  [{load_average()}]"
            )
        for phase, label in (("full", "full load:   "), ("hot", "hot customer:")):
            if phase not in loads or phase in args.skip:
                continue
            envelopes, tag = loads[phase]
            results[phase] = res = run_full(r, engine, tmpl, envelopes, tag, args, proc)
            print(
                f"{label}  {len(envelopes)} {what}, {res['rate']:.1f} events/s "
                f"({res['elapsed']:.2f} s first push to last commit; "
                f"push {res['publish'] * 1000:.0f} ms)  [{load_average()}]"
            )
            print(f"                latency from the push: {latency_line(res['latencies'])}")
            print(f"                statuses {res['statuses']}")
            print(f"worker memory, after {phase}:    {memory(*mains)}")
        if args.poison:
            results["poisoned"] = res = run_poisoned(r, engine, tmpl, n, customers, args, proc)
            print(
                f"full + poison:  {n} order.placed + 1 {args.poison} item, {res['rate']:.1f}"
                f" events/s ({res['elapsed']:.2f} s first push to last commit)  [{load_average()}]"
            )
            print(f"                latency from the push: {latency_line(res['latencies'])}")
            print(f"                statuses {res['statuses']}; the poison: {res['poison']}")
            print(f"                worker still running: {res['alive']}")
        if "half" not in args.skip:
            rate = args.half_rate or (results["full"]["rate"] / 2 if "full" in results else 40.0)
            envelopes, tag = loads["half"]
            results["half"] = res = run_paced(r, engine, tmpl, envelopes, tag, rate, args, proc)
            print(
                f"half load:      {len(envelopes)} {what} paced at {rate:.1f}/s "
                f"(achieved {res['rate']:.1f}/s, publisher at most "
                f"{res['publisher behind'] * 1000:.0f} ms behind)  [{load_average()}]"
            )
            print(f"                latency publish->commit: {latency_line(res['latencies'])}")
            print(f"                statuses {res['statuses']}")
            print(f"worker memory, after half:    {memory(*mains)}")
    finally:
        procfile.stop_all(processes)
    if "direct" not in args.skip:
        batch = get_settings().event_batch_size
        envelopes, tag = loads["direct"]
        results["direct"] = res = run_direct(
            engine, args.database_url, envelopes, tag, args.direct_processes, args.timeout, batch
        )
        how = "dust.inbox.process" if batch <= 1 else f"dust.inbox.process_batch ({batch} each)"
        print(
            f"direct ceiling: {len(envelopes)} {what} via {how} in "
            f"{args.direct_processes} processes, no Celery: {res['rate']:.1f} events/s "
            f"({res['elapsed']:.2f} s)  [{load_average()}]"
        )
        print(f"                statuses {res['statuses']}")
    engine.dispose()

    if args.metrics_rounds:
        run_metrics_rounds(args, r, engine, tmpl, n, customers, logs)
    engine.dispose()

    print()
    if "full" in results:
        e2e = results["full"]["rate"]
        if "noop" in results:
            target = (
                "target >= 2.0"
                if args.mix
                else "target >= 1.0 alone"
                if stream_mode
                else "target >= 1.0, then 2.0"
            )
            print(f"e2e / no-op ceiling:  {e2e / results['noop']['rate']:.3f}  ({target})")
        if "direct" in results:
            print(f"e2e / direct ceiling: {e2e / results['direct']['rate']:.3f}")
        if "hot" in results:
            ratio = results["hot"]["elapsed"] / results["full"]["elapsed"]
            verdict = "met" if ratio <= 1.5 else "NOT met"
            print(f"hot / spread time:    {ratio:.3f}  (target <= 1.5: {verdict})")
    if "half" in results:
        p99 = 1000 * percentile(results["half"]["latencies"], 99)
        verdict = "met" if p99 < 50 else "NOT met"
        print(f"half-load p99:        {p99:.1f} ms  (target < 50 ms: {verdict})")
    print(f"process logs: {logs}")
    print(f"finished {datetime.now(UTC):%H:%M:%S} UTC, {load_average()}")


def sweep_workers(args: Any, counts: list[int]) -> None:
    """The same seeded stream (``--mix`` / ``--only``; a tenth on one customer with
    ``--hot-customer``) applied by 1, 2, 4 … events worker processes, each time on a fresh
    database set up the same way: events/s, the no-op ceiling with as many workers, and
    the ledger each leaves. Exactly once and order independence: every event processed,
    no idempotency key twice, ``dust reconcile`` clean, and the same ledger (balances,
    lots, orders, holds, entries by reason) whatever the number of workers."""
    from dust.worker import db as worker_db

    n = args.events
    shares = mix.shares_for(args.mix, args.only)
    hot = 0.1 if args.hot_customer else 0.0
    print(f"Dust end to end, several workers, {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC,")
    print(f"{load_average()}; workers {counts}, pool {args.concurrency or 'default'} each")
    r = redis.Redis.from_url(args.broker_url)
    prints: dict[int, str] = {}
    ledgers: dict[int, dict[str, Any]] = {}
    logs = Path(tempfile.mkdtemp(prefix="dust-e2e-workers-"))
    for k in counts:
        for engine_ in list(worker_db._engines.values()):
            engine_.dispose()
        worker_db._engines.clear()
        reset_database(args.database_url)
        engine = create_engine(args.database_url)
        stream = mix.generate("f", n, shares, args.customers, args.seed, hot)
        mix.prepare(args.customers, [stream])
        analyze(args.database_url)
        if k == counts[0]:
            for line in machine(engine, args.broker_url):
                print(line)
            print(f"stream: seed {args.seed}, {n} events {stream.kinds}, hot share {hot}")
            print(f"git: {git_state()}")
        r.flushdb()
        tmpl = template(args.broker_url)
        deadlocks = deadlock_count(engine)
        folder = logs / f"workers-{k}"
        folder.mkdir()
        processes = start_processes(
            args.database_url, args.broker_url, folder, args.procfile, k, args.concurrency
        )
        try:
            noop = run_noop(r, tmpl, n, args.timeout) if "noop" not in args.skip else None
            res = run_full(r, engine, tmpl, stream.envelopes, "f", args, processes[0].proc)
        finally:
            procfile.stop_all(processes)
        deadlocks = deadlock_count(engine) - deadlocks
        ledgers[k] = ledger = mix.fingerprint(engine)
        prints[k] = hashlib.sha256(repr(ledger).encode()).hexdigest()[:16]
        reconcile = subprocess.run(
            [str(BIN / "dust"), "reconcile", "--json"],
            cwd=ROOT,
            env=worker_env(args.database_url, args.broker_url),
            capture_output=True,
            text=True,
            timeout=600,
        )
        engine.dispose()
        ratio = f", {res['rate'] / noop['rate']:.3f} of the no-op ceiling" if noop else ""
        print(
            f"{k} worker(s): {n} events {res['rate']:.1f} events/s{ratio}"
            + (f" (no-op {noop['rate']:.0f} tasks/s)" if noop else "")
            + f"  [{load_average()}]"
        )
        print(
            f"    statuses {res['statuses']}; deadlocks {deadlocks};"
            f" idempotency keys twice {ledger['keys_twice'][0][0]};"
            f" reconcile {'clean' if reconcile.returncode == 0 else 'NOT CLEAN'};"
            f" ledger {prints[k]}"
        )
    same = len(set(prints.values())) == 1
    print(f"\nthe same ledger whatever the number of workers: {'yes' if same else 'NO'}")
    if not same:
        first = ledgers[counts[0]]
        for k in counts[1:]:
            for table, rows in ledgers[k].items():
                if rows != first[table]:
                    diff = [(a, b) for a, b in zip(first[table], rows, strict=False) if a != b]
                    print(
                        f"  {k} workers, {table}: {diff[:3]} (rows {len(first[table])} vs {len(rows)})"
                    )
    print(f"process logs: {logs}")
    print(f"finished {datetime.now(UTC):%H:%M:%S} UTC, {load_average()}")
    if not same:
        sys.exit(1)


def run_metrics_rounds(
    args: Any,
    r: redis.Redis,
    engine: Engine,
    tmpl: dict[str, Any],
    n: int,
    customers: int,
    folder: Path,
) -> None:
    """The full load with metrics off and on, ``--metrics-rounds`` times each, alternating
    which goes first; each run on a fresh worker. Prints each run and the mean cost."""
    rates: dict[str, list[float]] = {"off": [], "on": []}
    print()
    for round_ in range(args.metrics_rounds):
        order = ("off", "on") if round_ % 2 == 0 else ("on", "off")
        for mode in order:
            extra = {"DUST_METRICS_PORT": str(19800 + round_)} if mode == "on" else {}
            logs = folder / f"metrics-{round_}-{mode}"
            logs.mkdir()
            processes = start_processes(
                args.database_url, args.broker_url, logs, args.procfile, **extra
            )
            proc = processes[0].proc
            try:
                tag = f"m{round_}{'y' if mode == 'on' else 'x'}"
                messages = [
                    wire(tmpl, "dust.handle_event", order_placed(tag, o, customers))
                    for o in range(n)
                ]
                started, _ = push_all(r, messages)
                rows = wait_for_events(engine, tag, n, args.timeout, proc, r)
                rate = n / (max(at for _, _, at in rows) - started)
            finally:
                procfile.stop_all(processes)
            rates[mode].append(rate)
            print(
                f"metrics {mode:3}: round {round_ + 1}, {n} order.placed, {rate:.1f} events/s"
                f"  [{load_average()}]"
            )
    off, on = statistics.mean(rates["off"]), statistics.mean(rates["on"])
    print(
        f"metrics cost:   mean {off:.1f} events/s off, {on:.1f} on: "
        f"{(off - on) / off * 100:+.1f} % (target < 3 %)  [{load_average()}]"
    )


def deadlock_count(engine: Engine) -> int:
    """Deadlocks PostgreSQL has detected in this database so far (its statistics lag by
    up to a second: read after a pause)."""
    time.sleep(1.5)
    with engine.connect() as connection:
        return int(
            connection.scalar(
                text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            )
            or 0
        )


def git_state() -> str:
    def git(*a: str) -> str:
        return subprocess.run(
            ["git", *a], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{git('rev-parse', '--short', 'HEAD')}" + (
        f" + uncommitted changes in {len(dirty.splitlines())} files" if dirty else ""
    )


if __name__ == "__main__":
    main()
