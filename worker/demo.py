"""``dust demo``: the main job on whatever Dust is configured with (by default the embedded
SQLite file and file broker, so a fresh machine needs no server).

It migrates the schema, starts the Procfile's processes (``dust.worker.procfile``), publishes a
simulated stream — products, customers, orders, checkout reservations through
``dust.reserve``, refunds (one before its order), cancels (one before its order),
redelivered duplicates, a conflicting duplicate, malformed events and an event nobody
subscribes to — waits until every event is recorded, then prints what happened, the
balances and a reconciliation. Ids carry a per-run tag, so runs never collide.

Earn rules are on: every third customer is in the run's ``vip`` group (x2), a campaign
(x1.5) covers the first orders, a customer's late ``customer.updated`` puts them in the
group before their orders (which then earn again), and the worker keeps new orders' dust
pending for a day (``DUST_PENDING_DAYS=1``); at the end the lot job is run as of the next
day, which releases it.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dust.ledger.reconcile import reconcile
from dust.models import Event, EventConflict, JobRun
from dust.models.schema import upgrade
from dust.tasks.inbox import parse_envelope
from dust.worker import display
from dust.worker.app import EVENTS_QUEUE, REQUESTS_QUEUE, app
from dust.worker.beat import JOBS
from dust.worker.db import session_scope
from dust.worker.procfile import BEAT_READY, Process, command
from dust.worker.publisher import publish_envelopes
from dust.worker.settings import get_settings

console = Console(stderr=True)
STALL_SECONDS = 90


@dataclass
class Stream:
    """The simulated commerce platform: what it publishes and what it expects back."""

    tag: str
    rng: random.Random
    clock: datetime
    customers: list[str] = field(default_factory=list)
    products: dict[str, int | None] = field(default_factory=dict)  # id -> dust price
    placed: list[dict[str, Any]] = field(default_factory=list)
    #: When the customers were all created (the late group update is just after).
    customers_done: datetime | None = None
    published: list[Any] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    counter: int = 0

    def envelope(self, name: str, data: dict[str, Any]) -> dict[str, Any]:
        self.counter += 1
        self.clock += timedelta(seconds=self.rng.randint(5, 90))
        return {
            "id": f"{self.tag}-evt-{self.counter:05d}",
            "name": name,
            "occurred_at": self.clock.isoformat().replace("+00:00", "Z"),
            "data": data,
        }

    def add(self, message: Any, kind: str = "event") -> Any:
        self.published.append(message)
        self.kinds[kind] += 1
        return message

    def setup(self, customers: int) -> list[Any]:
        start = len(self.published)
        for n in range(1, 7):
            product_id = f"{self.tag}-prod-{n}"
            dust_price = 400 * n if n >= 5 else None  # products 5 and 6 are dust-only
            self.products[product_id] = dust_price
            metadata = {"dust_only": True, "dust_price": dust_price} if dust_price else {}
            self.add(self.envelope("product.created", {"id": product_id, "metadata": metadata}))
        for n in range(1, customers + 1):
            customer_id = f"{self.tag}-cus-{n}"
            self.customers.append(customer_id)
            data = {"id": customer_id, "email": f"customer{n}@example.com"}
            data["group_ids"] = [self.vip] if n % 3 == 0 else []
            self.add(self.envelope("customer.created", data))
        self.customers_done = self.clock
        return self.published[start:]

    @property
    def vip(self) -> str:
        return f"{self.tag}-vip"

    def order(
        self,
        n: int,
        *,
        guest: bool = False,
        dust_total: int = 0,
        cart_id: str | None = None,
        customer_id: str | None = None,
        dust_item: bool = False,
    ) -> dict[str, Any]:
        paid = [p for p, price in self.products.items() if price is None]
        items = []
        for i in range(self.rng.randint(1, 3)):
            quantity = self.rng.randint(1, 3)
            unit = self.rng.choice([999, 1999, 2499, 4999])
            items.append(
                {
                    "id": f"{self.tag}-item-{n}-{i}",
                    "product_id": self.rng.choice(paid),
                    "quantity": quantity,
                    "total": unit * quantity,
                }
            )
        if dust_item:
            dust_product = next(p for p, price in self.products.items() if price)
            items.append(
                {
                    "id": f"{self.tag}-item-{n}-d",
                    "product_id": dust_product,
                    "quantity": 1,
                    "total": 0,
                }
            )
        subtotal = sum(item["total"] for item in items)
        shipping, tax = 499, subtotal * 8 // 100
        return {
            "id": f"{self.tag}-order-{n}",
            "customer_id": None if guest else customer_id or self.rng.choice(self.customers),
            "cart_id": cart_id or f"{self.tag}-cart-{n}",
            "currency_code": "usd",
            "total": subtotal + shipping + tax,
            "shipping_total": shipping,
            "tax_total": tax,
            "dust_total": dust_total,
            "store_credit_total": 0,
            "items": items,
        }


def _expected_ids(messages: list[Any]) -> set[str]:
    now = datetime.now(UTC)
    return {parse_envelope(message, now).event_id for message in messages}


#: The demo's scheduler runs the jobs on a short schedule, so they run while you watch;
#: dust earned on orders of the last day is pending.
DEMO_SCHEDULES = {
    "DUST_SCHEDULE_EXPIRE_HOLDS_SECONDS": "3",
    "DUST_SCHEDULE_EXPIRE_LOTS_SECONDS": "4",
    "DUST_SCHEDULE_RECONCILE_SECONDS": "5",
    "DUST_PENDING_DAYS": "1",
}


def start_processes(tag: str, folder: Path) -> list[Process]:
    """The Procfile's processes (events worker, requests worker, scheduler), each with a
    node name and a log of this run; started when the demo's ``with`` block is entered."""
    env = {**os.environ, **DEMO_SCHEDULES}
    quiet = ["--loglevel", "WARNING"]
    return [
        Process(
            name,
            command(name, "--concurrency", "2", "--hostname", f"{tag}-{name}@%h", *quiet),
            folder / f"{tag}-{name}.log",
            env=env,
        )
        for name in ("worker", "requests")
    ] + [
        Process(
            "scheduler",
            command("beat", "--schedule", str(folder / f"{tag}-beat-schedule")),
            folder / f"{tag}-beat.log",
            env=env,
            ready=BEAT_READY,
        )
    ]


def _recorded(ids: set[str]) -> int:
    wanted = list(ids)
    found = 0
    with session_scope(read_only=True) as session:
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            found += (
                session.scalar(
                    select(func.count()).select_from(Event).where(Event.event_id.in_(chunk))
                )
                or 0
            )
    return found


def _conflicts(session: Session, ids: set[str]) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(EventConflict).where(EventConflict.event_id.in_(ids))
        )
        or 0
    )


def _queue_size() -> int:
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        return sum(
            channel.queue_declare(queue=q, passive=True).message_count
            for q in (EVENTS_QUEUE, REQUESTS_QUEUE)
        )


def _wait(
    processes: list[Process],
    progress: Progress,
    task: Any,
    ids: set[str],
    conflict_ids: set[str],
) -> None:
    done, last_change, last_done = 0, time.monotonic(), -1
    while True:
        for process in processes:
            process.check()
        with session_scope(read_only=True) as session:
            conflicts = _conflicts(session, conflict_ids)
        done = _recorded(ids) + min(conflicts, len(conflict_ids))
        progress.update(task, completed=done)
        if done >= len(ids) + len(conflict_ids) and _queue_size() == 0:
            return
        if done != last_done:
            last_done, last_change = done, time.monotonic()
        elif time.monotonic() - last_change > STALL_SECONDS:
            raise RuntimeError(f"no progress for {STALL_SECONDS}s ({done} of {len(ids)} recorded)")
        time.sleep(0.2)


def _reserve(cart_id: str, customer_id: str, amount: int) -> dict[str, Any]:
    kwargs = {"cart_id": cart_id, "customer_id": customer_id, "amount": amount, "kind": "dust"}
    reply: dict[str, Any] = app.send_task("dust.reserve", kwargs=kwargs, queue=REQUESTS_QUEUE).get(
        timeout=60
    )
    return reply


def _balance(customer_id: str) -> dict[str, Any]:
    reply: dict[str, Any] = app.send_task(
        "dust.balance", kwargs={"customer_id": customer_id}, queue=REQUESTS_QUEUE
    ).get(timeout=60)
    return reply


def run_demo(customers: int, orders: int, seed: int, as_json: bool) -> bool:
    settings = get_settings()
    upgrade(settings.database)
    tag = f"demo{int(time.time())}"
    stream = Stream(tag, random.Random(seed), datetime.now(UTC) - timedelta(days=2))
    console.print(
        f"[bold]Dust demo[/] run [cyan]{tag}[/] — database {settings.database.split('://')[0]},"
        f" broker {settings.broker.split('://')[0]}"
    )
    processes = start_processes(tag, settings.embedded_dir)
    started = datetime.now(UTC)
    reservations: Counter[str] = Counter()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with ExitStack() as stack:
        for process in processes:
            stack.enter_context(process)
        progress = stack.enter_context(Progress(*columns, console=console, transient=as_json))
        # Phase 1: catalogue, customers and first orders, which earn dust (two days ago:
        # their pending day is over), the first ones in a campaign.
        first = stream.setup(customers)
        rules = _add_rules(stream)
        for n in range(1, orders // 2 + 1):
            data = stream.order(n, guest=stream.rng.random() < 0.1)
            stream.placed.append(data)
            first.append(stream.add(stream.envelope("order.placed", data)))
        publish_envelopes(first)
        task = progress.add_task(
            "earning: customers and first orders", total=len(_expected_ids(first))
        )
        _wait(processes, progress, task, _expected_ids(first), set())

        # Phase 2: checkouts that reserve dust, refunds, cancels and bad input, today: the
        # dust these orders earn is pending.
        stream.clock = datetime.now(UTC) - timedelta(minutes=30)
        second = _phase_two(stream, orders, reservations)
        ids = _expected_ids(second)
        conflict_ids = {
            m["id"]
            for m in second
            if isinstance(m, dict)
            and m.get("id") in _expected_ids(first)
            and m.get("data", {}).get("conflict")
        }
        publish_envelopes(second)
        task = progress.add_task("checkouts, refunds, cancels, bad input", total=len(ids))
        _wait(processes, progress, task, ids - conflict_ids, conflict_ids)
        balances = [_balance(c) for c in stream.customers]
        task = progress.add_task("scheduler: every job runs once more", total=len(JOBS))
        _wait_for_jobs(processes, progress, task, datetime.now(UTC))
    rules["released"] = _release_tomorrow()
    rules.update(_rules_outcome(stream))
    return _report(stream, balances, reservations, _job_runs(started), rules, as_json)


def _add_rules(stream: Stream) -> dict[str, Any]:
    """The run's earn rules: its vip group earns twice; a campaign earns 1.5 times on the
    orders of the next 15 minutes of the stream's clock."""
    from decimal import Decimal

    from dust.ledger import rules

    assert stream.customers_done is not None
    campaign_from = stream.customers_done
    campaign_to = campaign_from + timedelta(minutes=15)
    with session_scope() as session:
        vip = rules.add_rule(
            session,
            kind=rules.GROUP_MULTIPLIER,
            group_id=stream.vip,
            multiplier=Decimal(2),
            starts_at=campaign_from - timedelta(days=1),
            actor="demo",
            reason=f"demo run {stream.tag}: vip customers earn twice",
        )
        campaign = rules.add_rule(
            session,
            kind=rules.CAMPAIGN,
            multiplier=Decimal("1.5"),
            name=f"{stream.tag} launch",
            starts_at=campaign_from,
            ends_at=campaign_to,
            actor="demo",
            reason=f"demo run {stream.tag}: launch campaign",
        )
        return {
            "group_rule": {"id": vip.id, "group_id": stream.vip, "multiplier": "2"},
            "campaign": {
                "id": campaign.id,
                "multiplier": "1.5",
                "starts_at": campaign_from.isoformat(),
                "ends_at": campaign_to.isoformat(),
            },
        }


def _release_tomorrow() -> dict[str, Any]:
    """What ``dust expire --as-of`` a day and an hour from now does to pending dust: the
    lot job releases it (and would expire lots due by then)."""
    from dust.tasks import runs

    run = runs.run_now("expire_lots", datetime.now(UTC) + timedelta(days=1, hours=1))
    return {"as_of": run["as_of"], "released": run["counts"].get("released", 0)}


def _rules_outcome(stream: Stream) -> dict[str, Any]:
    """How the run's orders earned: by multiplier, the late group update's effect, and the
    dust pending before the release."""
    from dust.models import Order

    with session_scope(read_only=True) as session:
        rows = session.execute(
            select(Order.earn_multiplier, func.count(), func.sum(Order.earned))
            .where(Order.order_id.like(f"{stream.tag}-%"), Order.placed_event_id.is_not(None))
            .group_by(Order.earn_multiplier)
        ).all()
        late = session.get(Event, f"{stream.tag}-late-groups")
    by_multiplier = {(m or "1"): {"orders": int(n), "earned": int(e or 0)} for m, n, e in rows}
    regrouped = json.loads(late.detail or "{}").get("regrouped_orders", {}) if late else {}
    return {"orders_by_multiplier": by_multiplier, "late_group_update": regrouped}


def _job_runs(since: datetime) -> dict[str, dict[str, int]]:
    """How many runs of each job started since ``since``, by outcome."""
    with session_scope(read_only=True) as session:
        rows = session.execute(
            select(JobRun.job, JobRun.status, func.count())
            .where(JobRun.started_at >= since)
            .group_by(JobRun.job, JobRun.status)
        ).all()
    runs: dict[str, dict[str, int]] = {job: {} for job in JOBS}
    for job, status, count in rows:
        runs.setdefault(job, {})[status] = count
    return runs


def _wait_for_jobs(
    processes: list[Process], progress: Progress, task: Any, since: datetime
) -> None:
    """Wait until each scheduled job has finished a run that started after ``since``."""
    deadline = time.monotonic() + STALL_SECONDS
    while time.monotonic() < deadline:
        for process in processes:
            process.check()
        runs = _job_runs(since)
        done = sum(1 for job in JOBS if runs[job].get("succeeded"))
        progress.update(task, completed=done)
        if done == len(JOBS):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the scheduled jobs did not all run within {STALL_SECONDS}s")


def _phase_two(stream: Stream, orders: int, reservations: Counter[str]) -> list[Any]:
    rng, tag = stream.rng, stream.tag
    messages: list[Any] = []
    base = orders // 2
    # A group change that arrives late: customer 2 joined vip right after the customers
    # were created, before any order; their orders earn twice from then on.
    assert stream.customers_done is not None
    joined = stream.customers_done + timedelta(seconds=1)
    messages.append(
        stream.add(
            {
                "id": f"{tag}-late-groups",
                "name": "customer.updated",
                "occurred_at": joined.isoformat().replace("+00:00", "Z"),
                "data": {"id": stream.customers[min(1, len(stream.customers) - 1)]}
                | {"group_ids": [stream.vip]},
            }
        )
    )
    # Checkouts paying partly with dust: reserve through dust.reserve, then place the order.
    for offset, customer_id in enumerate(stream.customers[: max(1, len(stream.customers) // 2)]):
        n = base + offset + 1
        cart_id = f"{tag}-cart-{n}"
        available = _balance(customer_id)["dust"]["available"]
        wanted = max(1, available // 2) if available else 50
        reply = _reserve(cart_id, customer_id, wanted)
        reservations[reply["status"]] += 1
        dust_total = reply["amount"] if reply["status"] == "reserved" else 0
        if offset == 0:
            dust_total = available + 1000  # more than the customer has: needs attention
        data = stream.order(n, cart_id=cart_id, customer_id=customer_id, dust_total=dust_total)
        stream.placed.append(data)
        messages.append(stream.add(stream.envelope("order.placed", data)))
    # An abandoned checkout: reserved, then released.
    if stream.customers:
        customer_id = stream.customers[-1]
        available = _balance(customer_id)["dust"]["available"]
        if available:
            reservations[_reserve(f"{tag}-cart-abandoned", customer_id, available)["status"]] += 1
            app.send_task(
                "dust.release", kwargs={"cart_id": f"{tag}-cart-abandoned"}, queue=REQUESTS_QUEUE
            ).get(timeout=60)
            reservations["released"] += 1
    # Refunds of earlier orders, some to store credit (one of a guest order).
    refundable = [o for o in stream.placed[:base] if o["total"] > 2000]
    for i, order in enumerate(rng.sample(refundable, min(len(refundable), max(2, base // 4)))):
        data = {
            "id": f"{tag}-refund-{i}",
            "order_id": order["id"],
            "amount": order["total"] // 2,
            "currency_code": "usd",
            "to_store_credit": i % 2 == 0,
        }
        messages.append(stream.add(stream.envelope("refund.created", data)))
    # Cancels: one of an order that spent dust (the dust goes back), one of a plain order.
    spent = [o for o in stream.placed[base:] if o["dust_total"]]
    for order in (spent[-1:] if len(spent) > 1 else []) + stream.placed[base - 1 : base]:
        messages.append(stream.add(stream.envelope("order.canceled", {"id": order["id"]})))
    # Out of order: a refund and a cancel that arrive before their orders.
    late_a = stream.order(orders + 1, customer_id=stream.customers[0])
    late_b = stream.order(orders + 2, customer_id=stream.customers[-1])
    messages.append(
        stream.add(
            stream.envelope(
                "refund.created",
                {
                    "id": f"{tag}-refund-early",
                    "order_id": late_a["id"],
                    "amount": 1000,
                    "currency_code": "usd",
                    "to_store_credit": True,
                },
            )
        )
    )
    messages.append(stream.add(stream.envelope("order.canceled", {"id": late_b["id"]})))
    messages.append(stream.add(stream.envelope("order.placed", late_a)))
    messages.append(stream.add(stream.envelope("order.placed", late_b)))
    # The broker delivering twice, and a publisher reusing an id for other content.
    earlier = [m for m in stream.published[: len(stream.published) // 2] if isinstance(m, dict)]
    for message in rng.sample(earlier, min(5, len(earlier))):
        messages.append(stream.add(message, "duplicate"))
    clash = dict(earlier[-1], data=dict(earlier[-1]["data"], conflict=True))
    messages.append(stream.add(clash, "conflict"))
    # Malformed input, and an event nobody subscribes to.
    bad_order = stream.order(orders + 3)
    bad = [
        stream.envelope("order.placed", dict(bad_order, total="10999")),
        stream.envelope("order.placed", dict(bad_order, total=109.99)),
        stream.envelope(
            "refund.created",
            {
                "id": f"{tag}-refund-neg",
                "order_id": bad_order["id"],
                "amount": -5,
                "currency_code": "usd",
                "to_store_credit": True,
            },
        ),
        stream.envelope(
            "refund.created",
            {
                "id": f"{tag}-refund-nocur",
                "order_id": bad_order["id"],
                "amount": 5,
                "to_store_credit": True,
            },
        ),
        stream.envelope("order.placed", dict(bad_order, currency_code="dollars")),
        f'{{"id": "{tag}-broken", "name": "order.placed", "data": {{',
        ["not", "an", "object"],
    ]
    for message in bad:
        messages.append(stream.add(message, "malformed"))
    messages.append(stream.add(stream.envelope("cart.updated", {"id": f"{tag}-cart-1"}), "unknown"))
    rng.shuffle(messages)
    return messages


def _report(
    stream: Stream,
    balances: list[dict[str, Any]],
    reservations: Counter[str],
    job_runs: dict[str, dict[str, int]],
    rules: dict[str, Any],
    as_json: bool,
) -> bool:
    ids = _expected_ids(stream.published)
    with session_scope(read_only=True) as session:
        statuses: Counter[str] = Counter()
        attention = []
        wanted = list(ids)
        for i in range(0, len(wanted), 500):
            for event in session.scalars(
                select(Event).where(Event.event_id.in_(wanted[i : i + 500]))
            ):
                statuses[event.status] += 1
                if event.status in ("needs_attention", "failed"):
                    attention.append({"event_id": event.event_id, "reason": event.reason})
        conflicts = _conflicts(session, ids)
        check = reconcile(session)
    distinct = len(ids)
    adds_up = sum(statuses.values()) == distinct
    ledger_ok = not [d for d in check["discrepancies"] if d["check"] != "event"]
    summary = {
        "run": stream.tag,
        "published": len(stream.published),
        "published_by_kind": dict(stream.kinds),
        "distinct_events": distinct,
        "outcomes": {
            s: statuses.get(s, 0)
            for s in ("processed", "ignored", "rejected", "needs_attention", "failed")
        },
        "conflicts_refused": conflicts,
        "adds_up": adds_up,
        "reservations": dict(reservations),
        "needs_attention": attention,
        "job_runs": job_runs,
        "ledger_consistent": ledger_ok,
        "reconciliation": check,
        "balances": balances,
        "earn_rules": rules,
    }
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return adds_up and ledger_ok
    out = display.console()
    table = display.table(
        "customer", "dust", "held", "pending", "available", "store credit", title="Balances"
    )
    for b in balances:
        credit = (
            ", ".join(display.money(s["balance"], s["currency_code"]) for s in b["store_credit"])
            or "-"
        )
        d = b["dust"]
        table.add_row(
            b["customer_id"],
            str(d["balance"]),
            str(d["held"]),
            str(d["pending"]),
            str(d["available"]),
            credit,
        )
    out.print(table)
    pending = sum(b["dust"]["pending"] for b in balances)
    group, campaign = rules["group_rule"], rules["campaign"]
    out.print(
        f"earn rules: group {group['group_id']} x{group['multiplier']} (rule {group['id']});"
        f" campaign x{campaign['multiplier']} from {campaign['starts_at'][:19]}"
        f" to {campaign['ends_at'][:19]} (rule {campaign['id']})"
    )
    out.print(
        "  orders by multiplier: "
        + ", ".join(
            f"x{m}: {v['orders']} orders, {v['earned']} dust"
            for m, v in sorted(rules["orders_by_multiplier"].items())
        )
    )
    out.print(
        f"  late customer.updated (joined {group['group_id']} before their orders):"
        f" orders earned again {rules['late_group_update'] or 'none'}"
    )
    out.print(
        f"  pending (DUST_PENDING_DAYS=1): {pending} dust of today's orders above;"
        f" the lot job as of {rules['released']['as_of'][:19]} released"
        f" {rules['released']['released']}"
    )
    o = summary["outcomes"]
    out.print(
        f"published {summary['published']} messages: {distinct} distinct events"
        f" ({stream.kinds['duplicate']} redelivered duplicates and {stream.kinds['conflict']}"
        f" conflicting duplicate on top)"
    )
    out.print(
        f"  processed {o['processed']} + ignored {o['ignored']} + rejected {o['rejected']}"
        f" + needs attention {o['needs_attention']} + failed {o['failed']}"
        f" = {sum(o.values())} {'✓ adds up' if adds_up else '✗ DOES NOT ADD UP'}"
    )
    out.print(f"  conflicting duplicates refused: {conflicts}; reservations: {dict(reservations)}")
    for item in attention:
        out.print(f"  needs attention: {item['event_id']}: {item['reason']}")
    if attention:
        out.print(
            "  once looked at, close each: dust events resolve EVENT_ID --reason TEXT"
            " (optionally --debit/--credit N --kind ...); reconciliation then counts it no more"
        )
    ran = ", ".join(
        f"{job} {sum(by_status.values())}x"
        + (f" ({by_status.get('failed', 0)} failed)" if by_status.get("failed") else "")
        for job, by_status in job_runs.items()
    )
    out.print(f"scheduler (beat, short demo schedule): {ran}")
    checked = check["checked"]
    out.print(
        f"reconciliation over {checked['accounts']} accounts, {checked['entries']} entries,"
        f" {checked['lots']} lots, {checked['holds']} holds: "
        + (
            "ledger consistent"
            if ledger_ok
            else "DISCREPANCIES: "
            + json.dumps([d for d in check["discrepancies"] if d["check"] != "event"])
        )
    )
    return adds_up and ledger_ok
