"""Operating Dust: the Procfile's workers with ``DUST_METRICS_PORT``, scraped; their
batched events seen by ``celery events``; ``dust health`` against them.

These workers use a Redis database of their own (``DUST_E2E_OPS_BROKER_URL``, default:
database 10 of the e2e Redis), so the session's other workers take none of their events
and the counts they serve are exactly what was published here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text

from dust.worker.procfile import child_pids

from .support import BIN, BROKER_URL, ROOT, bare_client, worker_env

pytestmark = [pytest.mark.e2e, pytest.mark.services]


def _ops_broker() -> str:
    given = os.environ.get("DUST_E2E_OPS_BROKER_URL")
    if given:
        return given
    parts = urlsplit(BROKER_URL)
    return urlunsplit(parts._replace(path="/10"))


OPS_BROKER_URL = _ops_broker()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def procfile_workers() -> list[list[str]]:
    """The commands of the Procfile's worker processes (every line running a worker)."""
    commands = []
    for line in (ROOT / "Procfile").read_text().splitlines():
        if ":" not in line or line.lstrip().startswith("#"):
            continue
        _, command = line.split(":", 1)
        words = shlex.split(command)
        if len(words) > 1 and Path(words[0]).name == "celery" and "worker" in words:
            commands.append([str(BIN / "celery"), *words[1:]])
    assert commands, "no worker in the Procfile"
    return commands


class OpsWorkers:
    """The Procfile's workers, each in its own process group, with metrics on."""

    def __init__(self, log_dir: Path, metrics_port: int) -> None:
        self.log_dir = log_dir
        self.metrics_port = metrics_port
        self.env = worker_env(
            DUST_BROKER_URL=OPS_BROKER_URL,
            DUST_RESULT_BACKEND=OPS_BROKER_URL,
            DUST_METRICS_PORT=str(metrics_port),
        )
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self) -> None:
        for n, command in enumerate(procfile_workers()):
            log = self.log_dir / f"ops{n}.log"
            self.logs.append(log)
            full = [*command, "--concurrency", "2", "-n", f"ops{n}-{uuid.uuid4().hex[:6]}@%h"]
            with log.open("ab") as out:
                self.procs.append(
                    subprocess.Popen(
                        full,
                        cwd=ROOT,
                        env=self.env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + 60
        for proc, log in zip(self.procs, self.logs, strict=True):
            while not re.search(r" ready\.$", log.read_text("utf-8", "replace"), re.M):
                assert proc.poll() is None, f"worker exited:\n{self.text()}"
                assert time.monotonic() < deadline, f"worker not ready:\n{self.text()}"
                time.sleep(0.1)
        while len(self.ports()) < len(self.procs):
            assert time.monotonic() < deadline, f"metrics not served:\n{self.text()}"
            time.sleep(0.1)

    def ports(self) -> list[int]:
        whole = "\n".join(log.read_text("utf-8", "replace") for log in self.logs)
        found = re.findall(r"metrics at http://[^:]+:(\d+)/metrics", whole)
        return sorted({int(p) for p in found})

    def text(self) -> str:
        return "\n".join(log.read_text("utf-8", "replace")[-20000:] for log in self.logs)

    def pool_children(self) -> list[int]:
        return [child for proc in self.procs for child in child_pids(proc.pid)]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def ops(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsWorkers]:
    redis.Redis.from_url(OPS_BROKER_URL).flushdb()
    workers = OpsWorkers(tmp_path_factory.mktemp("ops-logs"), free_port())
    try:
        workers.start()
        yield workers
    finally:
        workers.stop()


def scrape(ports: list[int]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of every worker's /metrics, summed over the workers."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            body = reply.read().decode()
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                samples[key] = samples.get(key, 0.0) + sample.value
    return samples


def event_counts(samples: dict[Any, float], prefix: str) -> dict[tuple[str, str], int]:
    """``dust_events_total`` by (name, status), for the event names starting with prefix."""
    counts = {}
    for (name, labels), value in samples.items():
        labels = dict(labels)
        if name == "dust_events_total" and labels["name"].startswith(prefix):
            counts[(labels["name"], labels["status"])] = int(value)
    return counts


FAIL_TRIGGER = """
CREATE OR REPLACE FUNCTION dust_test_fail() RETURNS trigger AS $$
BEGIN
  IF NEW.customer_id LIKE 'cus_fail_%' THEN RAISE EXCEPTION 'injected failure'; END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS dust_test_fail ON dust_accounts;
CREATE TRIGGER dust_test_fail BEFORE INSERT ON dust_accounts
  FOR EACH ROW EXECUTE FUNCTION dust_test_fail();
"""


@pytest.fixture
def failing_customers(engine: Engine) -> Iterator[None]:
    """Opening an account for ``cus_fail_*`` raises in PostgreSQL: not transient, so the
    event is recorded ``failed`` at once (a bug, as far as the worker can tell)."""
    with engine.begin() as connection:
        connection.execute(text(FAIL_TRIGGER))
    try:
        yield
    finally:
        with engine.begin() as connection:
            connection.execute(text("DROP TRIGGER IF EXISTS dust_test_fail ON dust_accounts"))


def one_of_each(uid: str, round_: int) -> tuple[list[dict[str, Any]], dict[tuple[str, str], int]]:
    """Envelopes that end in every status, and the counts they must give."""
    p = f"{uid}r{round_}"
    name = f"x{uid}."  # event names of this test only, so counts are exactly ours
    envelopes = [
        {"id": f"{p}_ok", "name": "customer.created", "data": {"id": f"cus_{p}"}},
        {"id": f"{p}_ign", "name": f"{name}unknown", "data": {"id": "a"}},
        {"id": f"{p}_rej", "name": "order.placed", "data": {"id": f"o_{p}", "total": "x"}},
        {
            "id": f"{p}_att",
            "name": "order.placed",
            "data": {
                "id": f"o_{p}",
                "customer_id": f"cus_{p}",
                "currency_code": "usd",
                "total": 1000,
                "dust_total": 500,
            },
        },
        {"id": f"{p}_fail", "name": "customer.created", "data": {"id": f"cus_fail_{p}"}},
    ]
    expected = {
        ("customer.created", "processed"): 1,
        (f"{name}unknown", "ignored"): 1,
        ("order.placed", "rejected"): 1,
        ("order.placed", "needs_attention"): 1,
        ("customer.created", "failed"): 1,
    }
    return envelopes, expected


def wait_statuses(engine: Engine, ids: list[str], timeout: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as connection:
            rows = dict(
                connection.execute(
                    text("SELECT event_id, status FROM dust_events WHERE event_id = ANY(:ids)"),
                    {"ids": ids},
                ).all()
            )
        if len(rows) == len(ids):
            return rows
        assert time.monotonic() < deadline, f"events not settled: {rows}"
        time.sleep(0.1)


def publish(*envelopes: dict[str, Any]) -> None:
    client = bare_client()
    client.conf.broker_url = OPS_BROKER_URL
    with client.producer_or_acquire() as producer:
        for envelope in envelopes:
            client.send_task(
                "dust.handle_event", args=[envelope], queue="dust.events", producer=producer
            )
    client.close()


def totals(counts: dict[tuple[str, str], int], extra: dict[tuple[str, str], int]) -> dict:
    merged = dict(counts)
    for key, value in extra.items():
        merged[key] = merged.get(key, 0) + value
    return merged


def mine(samples: dict[Any, float], uid: str, expected: dict[tuple[str, str], int]) -> dict:
    """The counts of the event names ``expected`` speaks of (shared names like
    ``order.placed`` count only this module's events: its workers see no others)."""
    names = {name for name, _ in expected}
    return {k: v for k, v in event_counts(samples, "").items() if k[0] in names and v}


def wait_counts(ops: OpsWorkers, uid: str, expected: dict, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(ops.ports())
        if mine(samples, uid, expected) == expected or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def test_metrics_count_every_status_exactly_also_after_a_pool_child_is_killed(
    ops: OpsWorkers, engine: Engine, failing_customers: None
) -> None:
    uid = uuid.uuid4().hex[:8]
    envelopes, expected = one_of_each(uid, 1)
    conflict = {**envelopes[0], "data": {"id": f"cus_{uid}r1", "email": "other@example.com"}}
    publish(*envelopes)
    statuses = wait_statuses(engine, [e["id"] for e in envelopes])
    assert sorted(statuses.values()) == sorted(
        ["processed", "ignored", "rejected", "needs_attention", "failed"]
    )
    publish(conflict, envelopes[1])  # a conflict, and a plain duplicate
    expected = totals(expected, {("customer.created", "conflict"): 1})
    samples = wait_counts(ops, uid, expected)
    assert mine(samples, uid, expected) == expected, ops.text()[-3000:]
    assert samples[("dust_event_duplicates_total", ())] >= 1

    # a pool child dies (kill -9) and is replaced: what it counted stays counted
    children = ops.pool_children()
    assert children
    os.kill(children[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while children[0] in ops.pool_children() or len(ops.pool_children()) < len(children):
        assert time.monotonic() < deadline, "the pool child was not replaced"
        time.sleep(0.1)
    envelopes2, expected2 = one_of_each(uid, 2)
    publish(*envelopes2)
    wait_statuses(engine, [e["id"] for e in envelopes2])
    expected = totals(expected, expected2)
    samples = wait_counts(ops, uid, expected)
    assert mine(samples, uid, expected) == expected, ops.text()[-3000:]

    # every settled event has its lag and apply time; batches were counted
    settled = sum(expected.values()) - expected[("customer.created", "conflict")]
    assert samples[("dust_event_lag_seconds_count", ())] >= settled
    assert samples[("dust_event_apply_seconds_count", ())] >= settled
    assert samples[("dust_batch_size_count", ())] >= 1
    queues = {dict(labels)["queue"] for name, labels in samples if name == "dust_queue_messages"}
    assert {"dust.events", "dust.requests"} <= queues
    with engine.connect() as connection:
        attention = connection.scalar(
            text("SELECT count(*) FROM dust_events WHERE status = 'needs_attention'")
        )
    time.sleep(5.1)  # the sampled gauges are reused for 5 s
    # Every worker process samples the same table, so each reports the whole count (the
    # alert rules take max() over them); summing over the processes would count it twice.
    for port in ops.ports():
        assert scrape([port])[("dust_needs_attention_events", ())] == attention


def test_requests_and_jobs_are_counted(ops: OpsWorkers, engine: Engine) -> None:
    client = bare_client()
    client.conf.broker_url = OPS_BROKER_URL
    client.conf.result_backend = OPS_BROKER_URL
    before = scrape(ops.ports())
    key = ("dust_requests_total", (("status", "ok"), ("task", "balance")))
    reply = client.send_task(
        "dust.balance", kwargs={"customer_id": "cus_nobody"}, queue="dust.requests"
    ).get(timeout=30)
    assert reply["customer_id"] == "cus_nobody"
    rejected = client.send_task(
        "dust.reserve",
        kwargs={"cart_id": "c", "customer_id": "cus_nobody", "amount": 5, "kind": "dust"},
        queue="dust.requests",
    ).get(timeout=30)
    assert rejected["status"] == "rejected"
    after = scrape(ops.ports())
    assert after[key] == before.get(key, 0) + 1
    assert after[("dust_requests_total", (("status", "rejected"), ("task", "reserve")))] >= 1
    assert after[("dust_request_seconds_count", (("task", "balance"),))] >= 1

    def job_runs(samples: dict[Any, float]) -> int:
        return int(
            sum(
                value
                for (name, labels), value in samples.items()
                if name == "dust_job_runs_total" and dict(labels)["job"] == "reconcile"
            )
        )

    client.send_task("dust.reconcile", queue="dust.jobs")  # no result kept: watch the count
    client.close()
    deadline = time.monotonic() + 60
    while job_runs(after := scrape(ops.ports())) != job_runs(before) + 1:
        assert time.monotonic() < deadline, ops.text()[-3000:]
        time.sleep(0.2)
    time.sleep(5.1)  # the sampled gauges are reused for 5 s
    after = scrape(ops.ports())
    with engine.connect() as connection:
        ok = connection.scalar(text("SELECT ok FROM dust_reconciliations ORDER BY id DESC LIMIT 1"))
    if ok is not None:
        assert after[("dust_reconcile_ok", ())] == (1 if ok else 0)


def test_batched_events_show_in_celery_events(ops: OpsWorkers, engine: Engine) -> None:
    """``celery events --dump`` (the stream Flower reads) shows each batched message
    received, started and succeeded, once task events are turned on at runtime."""
    env = {**ops.env}
    control = subprocess.run(
        [str(BIN / "celery"), "-A", "dust.worker.app", "control", "enable_events"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert control.returncode == 0, control.stdout + control.stderr
    dump_log = ops.log_dir / "events-dump.log"
    with dump_log.open("wb") as out:
        dump = subprocess.Popen(
            [str(BIN / "celery"), "-A", "dust.worker.app", "events", "--dump"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # published only once the dump receives the workers' heartbeats (bound, enabled)
        deadline = time.monotonic() + 90
        while "heartbeat" not in dump_log.read_text("utf-8", "replace"):
            assert dump.poll() is None, dump_log.read_text("utf-8", "replace")
            assert time.monotonic() < deadline, (
                f"no heartbeat in the dump; enable_events said: {control.stdout}"
            )
            time.sleep(0.2)
        uid = uuid.uuid4().hex[:8]
        envelopes = [
            {"id": f"{uid}_ev{n}", "name": "customer.created", "data": {"id": f"cus_{uid}{n}"}}
            for n in range(5)
        ]
        client = bare_client()
        client.conf.broker_url = OPS_BROKER_URL
        task_ids = []
        with client.producer_or_acquire() as producer:
            for envelope in envelopes:
                sent = client.send_task(
                    "dust.handle_event", args=[envelope], queue="dust.events", producer=producer
                )
                task_ids.append(sent.id)
        client.close()
        wait_statuses(engine, [e["id"] for e in envelopes])
        deadline = time.monotonic() + 20
        while True:
            said = dump_log.read_text("utf-8", "replace")
            seen = {
                kind: [t for t in task_ids if re.search(rf"{kind}.*{t}|{t}.*{kind}", said)]
                for kind in ("received", "started", "succeeded")
            }
            if all(len(found) == len(task_ids) for found in seen.values()):
                break
            assert time.monotonic() < deadline, f"events seen: {seen}\n{said[-3000:]}"
            time.sleep(0.3)
    finally:
        os.killpg(dump.pid, signal.SIGTERM)
        dump.wait(timeout=10)
        subprocess.run(
            [str(BIN / "celery"), "-A", "dust.worker.app", "control", "disable_events"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=60,
        )


def test_health_passes_with_the_workers_up(ops: OpsWorkers) -> None:
    done = subprocess.run(
        [str(BIN / "dust"), "health", "--json"],
        cwd=ROOT,
        env=ops.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert [c["name"] for c in report["checks"]] == ["database", "schema", "broker", "workers"]
    workers = next(c for c in report["checks"] if c["name"] == "workers")
    assert f"{len(ops.procs)} answering" in workers["detail"]
