"""Prometheus metrics of the worker (``DUST_METRICS_PORT``; unset: off).

A Celery worker is a main process and a prefork pool of children that come and go (a child
killed by the kernel, replaced after a crash). Counts made in a child must outlive it, so
the metrics use prometheus-client's multiprocess mode: every process writes its values to
memory-mapped files in one directory (``PROMETHEUS_MULTIPROC_DIR``; when unset, a fresh
temporary directory per worker, made before ``prometheus_client`` is imported and
inherited by the pool), and the main process serves their sum at ``/metrics``. A dead
child's files stay: its counts stay in the sum.

Each worker process serves on ``DUST_METRICS_PORT``; when another worker on the same host
holds that port, on the next free one above it (at most ``PORT_RANGE`` ports up), and it
logs the port it took. Give each worker of a host its own ``DUST_METRICS_PORT`` for fixed
scrape targets.

What each metric means is in ``docs/operations/README.md``. Counts are made where the
event settles (``tasks/events.py``), the requests and jobs from Celery's task signals, and
the sampled gauges (queues, needs-attention events, last reconciliation) at scrape time in
the main process.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

log = logging.getLogger("dust.metrics")

#: A worker whose port is taken tries this many ports above it.
PORT_RANGE = 16
#: Scrape-time samples (queues, database gauges) are reused for this long (seconds).
SAMPLE_SECONDS = 5.0


def _enabled() -> bool:
    return bool(os.environ.get("DUST_METRICS_PORT", "").strip())


def _prepare_multiprocess_dir() -> None:
    """Point prometheus-client at a directory of this worker's own, before it is imported
    (it picks its value class at import). The pool's children inherit the variable."""
    if not _enabled() or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    path = tempfile.mkdtemp(prefix="dust-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)


_prepare_multiprocess_dir()

from prometheus_client import (  # noqa: E402  (after the directory is chosen)
    CollectorRegistry,
    Counter,
    Histogram,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402

ENABLED = _enabled()

#: Seconds: a few milliseconds (one event in a batch) to a 5-minute visibility timeout.
APPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: Seconds from ``occurred_at`` to commit: sub-second live, hours for a backlog.
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86400)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

EVENTS = Counter(
    "dust_events", "Events settled, by event name and final status.", ["name", "status"]
)
DUPLICATES = Counter(
    "dust_event_duplicates",
    "Deliveries of an event already settled (redeliveries, republished envelopes).",
)
RETRIES = Counter("dust_event_retries", "Events handed to a later retry after a transient error.")
APPLY_SECONDS = Histogram(
    "dust_event_apply_seconds",
    "Seconds from the start of an event's batch (or task) to its settling.",
    buckets=APPLY_BUCKETS,
)
LAG_SECONDS = Histogram(
    "dust_event_lag_seconds",
    "Seconds from an event's occurred_at (its receipt, when it has none) to its commit.",
    buckets=LAG_BUCKETS,
)
BATCH_SIZE = Histogram("dust_batch_size", "Events per batch.", buckets=BATCH_BUCKETS)
JOB_RUNS = Counter("dust_job_runs", "Scheduled job steps, by job and outcome.", ["job", "status"])
REQUESTS = Counter(
    "dust_requests", "Checkout requests answered, by task and reply status.", ["task", "status"]
)
REQUEST_SECONDS = Histogram(
    "dust_request_seconds",
    "Seconds to answer a checkout request.",
    ["task"],
    buckets=REQUEST_BUCKETS,
)

#: Event statuses counted in ``dust_events_total``.
#: Gauges sampled at scrape time by :class:`SampledCollector`.
SAMPLED = (
    "dust_queue_messages",
    "dust_needs_attention_events",
    "dust_failed_events",
    "dust_reconcile_ok",
)
STATUSES = ("processed", "ignored", "rejected", "conflict", "needs_attention", "failed")
#: Jobs and requests whose task signals are counted (task name -> label).
JOB_TASKS = {
    "dust.expire_holds": "expire_holds",
    "dust.expire_lots": "expire_lots",
    "dust.reconcile": "reconcile",
}
REQUEST_TASKS = {
    "dust.reserve": "reserve",
    "dust.release": "release",
    "dust.balance": "balance",
    "dust.history": "history",
}


def events_settled(results: Iterable[Any], started: float) -> None:
    """Count settled events (``dust.tasks.inbox.Result`` with ``name`` and ``occurred_at``)
    just after their commit; ``started`` is ``time.monotonic()`` when applying began.

    A batch's events are counted together: one increment per (name, status) and per
    histogram bucket, not per event (each increment of a multiprocess value takes a lock
    and writes its file; per event they cost several percent of throughput)."""
    if not ENABLED:
        return
    apply_seconds = time.monotonic() - started
    now = time.time()
    counts: dict[tuple[str, str], int] = {}
    lags: list[float] = []
    duplicates = retries = 0
    for result in results:
        status = result.status
        if status == "duplicate":
            duplicates += 1
        elif status == "retry":
            retries += 1
        else:
            key = (result.name or "?", status)
            counts[key] = counts.get(key, 0) + 1
            occurred: datetime | None = result.occurred_at
            if occurred is not None:
                lags.append(max(0.0, now - occurred.timestamp()))
    for (name, status), count in counts.items():
        EVENTS.labels(name, status).inc(count)
    if duplicates:
        DUPLICATES.inc(duplicates)
    if retries:
        RETRIES.inc(retries)
    settled = sum(counts.values())
    if settled:
        observe_many(APPLY_SECONDS, [apply_seconds], times=settled)
    if lags:
        observe_many(LAG_SECONDS, lags)


def observe_many(histogram: Any, values: list[float], times: int = 1) -> None:
    """``histogram.observe(v)`` for each value (each ``times`` times), one increment per
    bucket touched. Uses the histogram's own buckets and sum, as ``observe`` does."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None:  # another client version
        for value in values:
            for _ in range(times):
                histogram.observe(value)
        return
    per_bucket: dict[int, int] = {}
    for value in values:
        index = bisect_left(bounds, value)
        per_bucket[index] = per_bucket.get(index, 0) + times
    for index, count in per_bucket.items():
        buckets[index].inc(count)
    total.inc(sum(values) * times)


def batch_taken(size: int) -> None:
    if ENABLED:
        BATCH_SIZE.observe(size)


# -- requests and jobs: Celery's task signals (in the pool child) --------------------------

_started: dict[str, float] = {}


def _on_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    name = getattr(task, "name", None)
    if task_id and name in REQUEST_TASKS:
        _started[task_id] = time.monotonic()


def _on_postrun(
    task_id: str | None = None, task: Any = None, retval: Any = None, state: str = "", **_: Any
) -> None:
    name = getattr(task, "name", None)
    if name in REQUEST_TASKS:
        started = _started.pop(task_id or "", None)
        if state != "SUCCESS":
            status = "error"
        elif isinstance(retval, dict) and isinstance(retval.get("status"), str):
            status = retval["status"]  # reserved, rejected, released
        else:  # a balance or history reply: no status of its own
            status = "ok"
        label = REQUEST_TASKS[name]
        REQUESTS.labels(label, status).inc()
        if started is not None:
            REQUEST_SECONDS.labels(label).observe(time.monotonic() - started)
    elif name in JOB_TASKS:
        status = str(retval) if state == "SUCCESS" else "error"
        if status in ("continued", "retry"):
            return  # a step of a run that goes on: counted when the run ends
        JOB_RUNS.labels(JOB_TASKS[name], status).inc()


def own_receiver(receiver_id: int) -> bool:
    """Whether a signal receiver (by ``id``) is one of this module's (see task_events)."""
    return receiver_id in (id(_on_prerun), id(_on_postrun))


def connect_signals() -> None:
    """Count requests and jobs (every process of a worker; no-op when metrics are off)."""
    if not ENABLED:
        return
    from celery.signals import task_postrun, task_prerun

    task_prerun.connect(_on_prerun, weak=False)
    task_postrun.connect(_on_postrun, weak=False)


# -- serving: the worker's main process --------------------------------------------------


class SampledCollector:
    """Gauges sampled at scrape time (at most every ``SAMPLE_SECONDS``): messages per queue
    (waiting, unacknowledged), events needing attention, the last reconciliation."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._cached: list[Any] = []
        self._at = 0.0

    def collect(self) -> Iterator[Any]:
        if time.monotonic() - self._at > SAMPLE_SECONDS:
            self._cached = list(self._sample())
            self._at = time.monotonic()
        yield from self._cached

    def _sample(self) -> Iterator[Any]:
        queues = GaugeMetricFamily(
            "dust_queue_messages",
            "Messages per queue: waiting, and delivered but unacknowledged (sampled).",
            labels=["queue", "state"],
        )
        try:
            for queue, waiting, unacked in queue_depths(self.app):
                queues.add_metric([queue, "waiting"], waiting)
                if unacked is not None:
                    queues.add_metric([queue, "unacked"], unacked)
        except Exception as exc:  # broker out of reach: the gauge is absent, not stale
            log.warning("metrics: could not sample the queues (%s)", _safe(exc))
        yield queues
        attention = GaugeMetricFamily(
            "dust_needs_attention_events", "Events recorded needs_attention (sampled)."
        )
        reconcile_ok = GaugeMetricFamily(
            "dust_reconcile_ok", "1 when the last reconciliation found the ledger clean, else 0."
        )
        failed = GaugeMetricFamily("dust_failed_events", "Events recorded failed (sampled).")
        try:
            counts, last_ok = ledger_state()
            attention.add_metric([], counts.get("needs_attention", 0))
            failed.add_metric([], counts.get("failed", 0))
            if last_ok is not None:
                reconcile_ok.add_metric([], 1 if last_ok else 0)
        except Exception as exc:
            log.warning("metrics: could not read the database (%s)", _safe(exc))
        yield attention
        yield failed
        yield reconcile_ok


def _safe(exc: BaseException) -> str:
    from dust.tasks.inbox import safe_message

    return f"{type(exc).__name__}: {safe_message(exc)}"


def queue_depths(app: Any) -> list[tuple[str, int, int | None]]:
    """``(queue, waiting, unacknowledged)`` per queue of the app; unacknowledged is known
    on Redis only (None elsewhere)."""
    names = [queue.name for queue in app.conf.task_queues]
    broker = app.conf.broker_url or ""
    if broker.split("://", 1)[0] in ("redis", "rediss"):
        return _redis_depths(broker, names)
    depths = []
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        for name in names:
            declared = channel.queue_declare(queue=name, passive=True)
            depths.append((name, int(declared.message_count), None))
    return depths


def _redis_depths(url: str, names: list[str]) -> list[tuple[str, int, int | None]]:
    import json

    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        # kombu keeps priority levels in lists named queue + "\x06\x16" + level.
        lists = {name: [name] + [f"{name}\x06\x16{p}" for p in (3, 6, 9)] for name in names}
        with client.pipeline(transaction=False) as pipe:
            for keys in lists.values():
                for key in keys:
                    pipe.llen(key)
            pipe.hvals("unacked")
            replies = pipe.execute()
        unacked = {name: 0 for name in names}
        for value in replies[-1]:
            try:
                routing_key = json.loads(value)[2]
            except (ValueError, IndexError, TypeError):
                continue
            if routing_key in unacked:
                unacked[routing_key] += 1
        depths = []
        position = 0
        for name, keys in lists.items():
            waiting = sum(replies[position : position + len(keys)])
            position += len(keys)
            depths.append((name, int(waiting), unacked[name]))
        return depths
    finally:
        client.close()


def ledger_state() -> tuple[dict[str, int], bool | None]:
    """Counts of ``failed`` and ``needs_attention`` events, and whether the last stored
    reconciliation was ok (None before the first)."""
    from sqlalchemy import func, select

    from dust.models import Event, Reconciliation
    from dust.worker.db import session_scope

    with session_scope() as session:
        rows = session.execute(
            select(Event.status, func.count())
            .where(Event.status.in_(("failed", "needs_attention")))
            .group_by(Event.status)
        ).all()
        last = session.scalar(select(Reconciliation.ok).order_by(Reconciliation.id.desc()).limit(1))
    return {status: count for status, count in rows}, last


def serve(app: Any, port: int, host: str = "") -> int:
    """Serve the sum of this worker's processes at ``/metrics`` on ``port`` (or the next
    free port above it). Returns the port taken."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(SampledCollector(app))
    last_error: OSError | None = None
    for candidate in range(port, min(port + PORT_RANGE, 65536)):
        try:
            start_http_server(candidate, addr=host or "0.0.0.0", registry=registry)
        except OSError as exc:
            last_error = exc
            continue
        log.info("metrics at http://%s:%d/metrics", host or "0.0.0.0", candidate)
        return candidate
    raise OSError(f"no free port for metrics from {port} to {port + PORT_RANGE - 1}: {last_error}")
