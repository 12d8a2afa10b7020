"""Helpers of the end-to-end tests: services, worker processes, the bare client, SQL.

Kept out of ``conftest.py`` so that test modules can import them (``from .support import``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import Engine, bindparam, create_engine, text
from sqlalchemy.engine import make_url

from dust.worker import procfile

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DATABASE_URL = os.environ.get(
    "DUST_E2E_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/dust_e2e"
)
BROKER_URL = os.environ.get("DUST_E2E_BROKER_URL", "redis://127.0.0.1:6379/14")
#: Low, so that a message held by a SIGKILLed worker is handed out again within seconds.
VISIBILITY_TIMEOUT = 10
EVENTS_QUEUE = "dust.events"
REQUESTS_QUEUE = "dust.requests"
FINAL_STATUSES = ("processed", "ignored", "rejected", "needs_attention")

# -- services: reachable, or skip (fail under CI) ---------------------------------------


def _admin_url() -> str:
    return make_url(DATABASE_URL).set(database="postgres").render_as_string(hide_password=False)


def unreachable() -> str | None:
    return procfile.unreachable(DATABASE_URL, BROKER_URL)


def prepare_database() -> None:
    database = make_url(DATABASE_URL).database
    admin = create_engine(_admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": database}
        )
        if not exists:
            connection.execute(text(f'CREATE DATABASE "{database}"'))
    admin.dispose()
    engine = create_engine(DATABASE_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    done = subprocess.run(
        [str(BIN / "dust"), "db", "upgrade"],
        cwd=ROOT,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        pytest.fail(f"dust db upgrade failed:\n{done.stdout}\n{done.stderr}", pytrace=False)


#: Money value of one dust per currency in the workers (the default stays "1").
REDEEM_VALUES = '{"jpy": "0.5", "kwd": "12.5"}'


def worker_env(**overrides: str) -> dict[str, str]:
    """The environment of a worker: this process's, minus any DUST_*, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUST_")}
    env.update(
        DUST_DATABASE_URL=DATABASE_URL,
        DUST_BROKER_URL=BROKER_URL,
        DUST_RESULT_BACKEND=BROKER_URL,
        DUST_VISIBILITY_TIMEOUT_SECONDS=str(VISIBILITY_TIMEOUT),
        DUST_REDEEM_VALUES=REDEEM_VALUES,
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


class WorkerProcess(procfile.Process):
    """One ``celery worker`` process (and its prefork pool), in its own process group,
    consuming events and requests together (one process of each kind in one)."""

    def __init__(
        self, name: str, log_path: Path, concurrency: int = 2, env: dict[str, str] | None = None
    ) -> None:
        # The Procfile's workers' command, with a fixed pool size and a node name of its own.
        command = procfile.worker_command(
            [EVENTS_QUEUE, REQUESTS_QUEUE],
            "--concurrency",
            str(concurrency),
            "--pool",
            "prefork",
            "-n",
            f"{name}@%h",
        )
        super().__init__(name, command, log_path, env=worker_env(**(env or {})), cwd=ROOT)
        self.concurrency = concurrency

    def start(self) -> WorkerProcess:
        assert not self.running(), f"{self.name} already running"
        super().start()
        return self

    def wait_ready(self, timeout: float = 40) -> WorkerProcess:
        try:
            super().wait_ready(timeout)
        except procfile.ProcessFailed as exc:
            pytest.fail(str(exc), pytrace=False)
        return self

    def pool_children(self) -> list[int]:
        return self.children()


class Cluster:
    """The workers of the session: two processes, each a prefork pool of two."""

    def __init__(self, log_dir: Path) -> None:
        self.workers = [WorkerProcess(f"e2e{n}", log_dir / f"e2e{n}.log") for n in (1, 2)]

    def ensure_running(self) -> None:
        started = [w for w in self.workers if not w.running()]
        for worker in started:
            worker.start()
        for worker in started:
            worker.wait_ready()

    def stop(self) -> None:
        procfile.stop_all(self.workers, timeout=20)

    def logs(self) -> str:
        return "\n".join(
            f"----- worker {w.name} ({w.log_path}) -----\n{w.log()}" for w in self.workers
        )


# -- the bare client and the database -----------------------------------------------------


def bare_client(**conf: Any) -> Celery:
    """A Celery client that does not import the project: broker, backend, JSON."""
    client = Celery("e2e-client", broker=BROKER_URL, backend=BROKER_URL)
    settings: dict[str, Any] = {
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "broker_connection_retry_on_startup": True,
    }
    settings.update(conf)
    client.conf.update(settings)
    return client


class Dust:
    """What a test does to the running system and how it looks at the result."""

    def __init__(self, client: Celery, engine: Engine) -> None:
        self.client = client
        self.engine = engine

    # publishing

    def publish(self, *envelopes: Any) -> None:
        with self.client.producer_or_acquire() as producer:
            for envelope in envelopes:
                self.client.send_task(
                    "dust.handle_event", args=[envelope], queue=EVENTS_QUEUE, producer=producer
                )

    def request(self, task: str, timeout: float = 30, **kwargs: Any) -> Any:
        return self.send_request(task, **kwargs).get(timeout=timeout)

    def send_request(self, task: str, **kwargs: Any) -> Any:
        return self.client.send_task(f"dust.{task}", kwargs=kwargs, queue=REQUESTS_QUEUE)

    def apply(self, *envelopes: dict[str, Any], timeout: float = 30) -> dict[str, dict]:
        """Publish and wait until every envelope has its final inbox row."""
        self.publish(*envelopes)
        return self.wait_events([e["id"] for e in envelopes], timeout=timeout)

    # observing

    def events(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        stmt = text(
            "SELECT event_id, name, status, reason, detail, attempts FROM dust_events"
            " WHERE event_id IN :ids"
        ).bindparams(bindparam("ids", expanding=True))
        with self.engine.connect() as connection:
            rows = connection.execute(stmt, {"ids": list(ids)}).mappings().all()
        found = {}
        for row in rows:
            row = dict(row)
            row["detail"] = json.loads(row["detail"]) if row["detail"] else {}
            found[row["event_id"]] = row
        return found

    def wait_events(
        self, ids: list[str], timeout: float = 30, statuses: tuple[str, ...] = FINAL_STATUSES
    ) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.events(ids)
            if len(rows) == len(set(ids)) and all(r["status"] in statuses for r in rows.values()):
                return rows
            if time.monotonic() > deadline:
                missing = sorted(set(ids) - set(rows))[:10]
                pending = {k: v["status"] for k, v in rows.items() if v["status"] not in statuses}
                pytest.fail(
                    f"events not final after {timeout}s: missing {missing}, pending {pending};"
                    f" broker: {broker_state()}",
                    pytrace=False,
                )
            time.sleep(0.05)

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as connection:
            return connection.scalar(text(sql), params)

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            return [dict(r) for r in connection.execute(text(sql), params).mappings()]

    def dust(self, customer_id: str) -> dict[str, int]:
        """Balance, held, pending and available of the customer's dust account (zeros if
        none)."""
        rows = self.rows(
            "SELECT balance, held, pending FROM dust_accounts"
            " WHERE customer_id = :c AND kind = 'dust'",
            c=customer_id,
        )
        if not rows:
            return {"balance": 0, "held": 0, "pending": 0, "available": 0}
        row = rows[0]
        return {**row, "available": row["balance"] - row["held"] - row["pending"]}

    def store_credit(self, customer_id: str) -> dict[str, int]:
        """Store-credit balance per currency."""
        rows = self.rows(
            "SELECT currency_code, balance FROM dust_accounts"
            " WHERE customer_id = :c AND kind = 'store_credit'",
            c=customer_id,
        )
        return {r["currency_code"]: r["balance"] for r in rows}

    def journal_disagreements(self) -> list[dict[str, Any]]:
        """Accounts whose cached balance or held total disagrees with entries / holds."""
        return self.rows(
            """
            SELECT a.id, a.customer_id, a.balance, a.held,
                   COALESCE(e.total, 0) AS journal, COALESCE(h.total, 0) AS active_holds
            FROM dust_accounts a
            LEFT JOIN (
                SELECT account_id,
                       SUM(CASE WHEN direction = 'credit' THEN amount ELSE -amount END) AS total
                FROM dust_entries GROUP BY account_id
            ) e ON e.account_id = a.id
            LEFT JOIN (
                SELECT account_id, SUM(amount) AS total FROM dust_holds
                WHERE status = 'active' GROUP BY account_id
            ) h ON h.account_id = a.id
            WHERE a.balance <> COALESCE(e.total, 0) OR a.held <> COALESCE(h.total, 0)
            """
        )


def wait_queue_empty(timeout: float = 20) -> None:
    """Until no event message is queued or delivered-but-unacknowledged: every copy of
    every published event has been handled."""
    r = redis.Redis.from_url(BROKER_URL)
    deadline = time.monotonic() + timeout
    while r.llen(EVENTS_QUEUE) or r.hlen("unacked"):
        if time.monotonic() > deadline:
            pytest.fail(f"event queue not drained after {timeout}s", pytrace=False)
        time.sleep(0.05)


def broker_state() -> dict[str, int]:
    """Messages waiting in each queue, and delivered but not acknowledged."""
    r = redis.Redis.from_url(BROKER_URL)
    return {
        EVENTS_QUEUE: r.llen(EVENTS_QUEUE),
        REQUESTS_QUEUE: r.llen(REQUESTS_QUEUE),
        "unacked": r.hlen("unacked"),
    }
