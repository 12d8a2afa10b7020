"""Where a slow request's time went: ``bench/requests.py --diagnose``.

While a drain runs, :class:`Sampler` asks PostgreSQL every ``interval`` what each backend
of the benchmark's database (and each background process of the server: checkpointer,
WAL writer, autovacuum) is doing (``pg_stat_activity``: state, wait event, statement,
transaction age) and times a Redis ``PING``. Afterwards :func:`explain` takes the slowest
requests and, for each, puts side by side:

- its phases from the ``requests`` process's log: sent → ``received`` by the worker's main
  process (broker and fetch), → start in a pool process (hand-over), the task's own run
  (``succeeded in``), → the reply read by the client (result backend);
- what the database's backends waited on while it ran (counts of samples per application,
  state and wait event: ``Lock:transactionid`` is a row lock, ``LWLock:WALWrite`` /
  ``IO:WALSync`` a commit waiting for the WAL, ``IO:DataFileRead`` a page read);
- the server log's lines around it (checkpoints, lock waits, autovacuum), when readable;
- the slowest Redis ``PING`` in its window.

Processes tell their connections apart by ``application_name`` (``dust-<process>``).
"""

from __future__ import annotations

import gc
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg
import redis
from sqlalchemy.engine import make_url

SAMPLE = """
SELECT coalesce(nullif(application_name, ''), backend_type), pid, coalesce(state, ''),
       coalesce(wait_event_type || ':' || wait_event, ''), left(coalesce(query, ''), 70),
       coalesce(extract(epoch FROM clock_timestamp() - xact_start), 0)
FROM pg_stat_activity
WHERE pid <> pg_backend_pid()
  AND (datname = current_database() OR backend_type <> 'client backend')
"""

CELERY_LINE = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): \w+/[\w-]+\] Task [\w.]+\[([0-9a-f-]{36})\]"
    r" (received|succeeded in ([0-9.e-]+)s)"
)
SERVER_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (\w+) ")
INTERESTING = ("checkpoint", "still waiting", "acquired", "automatic vacuum", "automatic analyze")


@dataclass
class Sample:
    at: float
    took: float
    rows: list[tuple[str, int, str, str, str, float]]
    redis_ms: float


@dataclass(eq=False)
class Sampler(threading.Thread):
    database_url: str
    broker_url: str
    interval: float = 0.02
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(daemon=True)
        self.stopping = threading.Event()

    def start(self) -> None:
        self.pauses: list[tuple[float, float, int]] = []  # this process's GC: start, s, gen
        self._gc_started = 0.0
        gc.callbacks.append(self._gc)
        super().start()

    def _gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            took = time.perf_counter() - self._gc_started
            self.pauses.append((time.time() - took, took, info["generation"]))

    def gc_between(self, start: float, end: float) -> list[tuple[float, float, int]]:
        """This process's collections of 5 ms or more overlapping the interval."""
        return [p for p in self.pauses if p[0] < end and p[0] + p[1] > start and p[1] >= 0.005]

    def run(self) -> None:
        url = make_url(self.database_url)
        connection = psycopg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            dbname=url.database,
            autocommit=True,
            application_name="dust-bench-sampler",
        )
        r = redis.Redis.from_url(self.broker_url)
        with connection:
            while not self.stopping.is_set():
                at = time.time()
                started = time.perf_counter()
                rows = connection.execute(SAMPLE).fetchall()
                took = time.perf_counter() - started
                ping = time.perf_counter()
                r.ping()
                redis_ms = (time.perf_counter() - ping) * 1000
                self.samples.append(Sample(at, took, rows, redis_ms))
                self.stopping.wait(self.interval)

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)
        if self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.at <= end]


def celery_phases(log: Path) -> dict[str, dict[str, float]]:
    """task id → {"received": epoch, "succeeded": epoch, "run": seconds} from a worker log."""
    phases: dict[str, dict[str, float]] = {}
    if not log.exists():
        return phases
    for line in log.read_text(errors="replace").splitlines():
        found = CELERY_LINE.match(line)
        if not found:
            continue
        stamp, task_id, what, run = found.groups()
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        entry = phases.setdefault(task_id, {})
        if what == "received":
            entry["received"] = at
        else:
            entry["succeeded"] = at
            entry["run"] = float(run)
    return phases


def server_lines(log: Path | None, start: float, end: float) -> list[str]:
    """The server log's checkpoint, lock-wait and autovacuum lines between two epochs."""
    if log is None or not log.exists():
        return []
    found = []
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        stamp = SERVER_LINE.match(line)
        if not stamp or not any(word in line for word in INTERESTING):
            continue
        at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        if start <= at <= end:
            found.append(line)
    return found


def checkpoints(log: Path | None, start: float, end: float) -> list[str]:
    return [line for line in server_lines(log, start, end) if "checkpoint" in line]


def explain(
    sent: list[tuple[float, float, str, str]],
    sampler: Sampler,
    requests_log: Path,
    server_log: Path | None,
    *,
    slowest: int = 8,
    threshold: float = 0.1,
) -> list[str]:
    """Lines describing the ``slowest`` requests of ``sent`` slower than ``threshold`` s."""
    phases = celery_phases(requests_log)
    slow = sorted((s for s in sent if s[1] >= threshold), key=lambda s: -s[1])[:slowest]
    lines = [
        f"  {len([s for s in sent if s[1] >= threshold])} requests >= {threshold * 1000:.0f} ms"
    ]
    overall: Counter[str] = Counter()
    for sample in sampler.samples:
        for app, _pid, state, wait, _query, _age in sample.rows:
            if app == "dust-requests" and state not in ("idle", ""):
                overall[f"{state} {wait or 'CPU'}"] += 1
    total = sum(overall.values()) or 1
    lines.append(
        f"  requests' connections over the drain, {len(sampler.samples)} samples: "
        + ", ".join(f"{k} {100 * n / total:.1f}%" for k, n in overall.most_common(8))
    )
    stalled: Counter[str] = Counter()
    for sample in sampler.samples:
        waits = {wait for _app, _pid, _state, wait, _query, _age in sample.rows}
        if "IO:WALInitWrite" in waits:
            stalled["a backend creating a WAL segment (IO:WALInitWrite)"] += 1
        if any(wait.startswith("Lock:") for wait in waits):
            stalled["a backend waiting for a lock (Lock:*)"] += 1
        if "LWLock:WALWrite" in waits:
            stalled["a backend waiting for the WAL write lock"] += 1
    lines.append(
        "  samples with "
        + (", ".join(f"{k}: {n}" for k, n in stalled.items()) or "no WAL or lock wait")
    )
    full = [took for _, took, gen in sampler.pauses if gen == 2]
    lines.append(
        f"  the benchmark's own full garbage collections: {len(full)}"
        + (f", longest {max(full) * 1000:.0f} ms" if full else "")
    )
    for at, took, task_id, kind in sorted(slow):
        end = at + took
        p = phases.get(task_id, {})
        if "received" in p and "succeeded" in p:
            begun = p["succeeded"] - p["run"]
            where = (
                f"broker {1000 * (p['received'] - at):.0f}, hand-over"
                f" {1000 * (begun - p['received']):.0f}, run {1000 * p['run']:.0f},"
                f" reply {1000 * (end - p['succeeded']):.0f} ms"
            )
        else:
            where = "phases not in the log"
        stamp = datetime.fromtimestamp(at).strftime("%H:%M:%S.%f")[:-3]
        lines.append(f"  {stamp} {kind:<7} {took * 1000:6.0f} ms: {where}")
        window = sampler.between(at, end)
        waits: Counter[str] = Counter()
        for sample in window:
            for app, _pid, state, wait, _query, _age in sample.rows:
                if state == "idle" or wait.startswith("Activity:"):
                    continue  # idle connections, background processes between rounds
                waits[f"{app} {state or '-'} {wait or 'CPU'}"] += 1
        if window:
            slow_sample = max(s.took for s in window) * 1000
            redis_top = max(s.redis_ms for s in window)
            top = ", ".join(f"{k} x{n}" for k, n in waits.most_common(6))
            lines.append(
                f"      {len(window)} samples (slowest pg_stat_activity {slow_sample:.0f} ms,"
                f" Redis PING max {redis_top:.1f} ms): {top or 'nothing active'}"
            )
            old = [
                f"{app} {age * 1000:.0f} ms"
                for sample in window
                for app, _pid, state, _wait, _query, age in sample.rows
                if age > 0.2
            ]
            if old:
                lines.append(
                    f"      transactions older than 200 ms: {', '.join(sorted(set(old))[-6:])}"
                )
        pauses = sampler.gc_between(at, end)
        if pauses:
            lines.append(
                "      the benchmark's own garbage collector: "
                + ", ".join(f"gen {g} {took * 1000:.0f} ms" for _, took, g in pauses)
            )
        for line in server_lines(server_log, at - 0.5, end + 0.5):
            lines.append(f"      server: {line[:200]}")
    return lines
