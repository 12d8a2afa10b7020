"""Helpers of the admin CLI tests: a Dust installation (working directory, environment,
database, worker process) driven through the real ``dust`` command.

Kept out of ``conftest.py`` so that only the admin tests depend on them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, inspect, text

from dust.worker import procfile

ROOT = Path(__file__).resolve().parents[1]
BIN = (
    ROOT / ".venv" / "bin"
    if (ROOT / ".venv" / "bin" / "dust").exists()
    else Path(sys.executable).parent
)
DUST = str(BIN / "dust")
CELERY = str(BIN / "celery")


@dataclass
class Run:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return (
            f"dust {' '.join(self.args)} -> exit {self.code}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


class Installation:
    """One Dust setup: a working directory and the DUST_* variables of its processes."""

    def __init__(self, name: str, cwd: Path, env: dict[str, str], database_url: str) -> None:
        self.name = name
        self.cwd = cwd
        self.database_url = database_url
        base = {k: v for k, v in os.environ.items() if not k.startswith("DUST_")}
        self.env = {**base, **env, "PYTHONUNBUFFERED": "1"}
        self.engine: Engine = create_engine(database_url)
        self.worker: procfile.Process | None = None
        self.log_path = cwd / f"worker-{name}.log"

    # -- the command line --------------------------------------------------------------

    def run(self, *args: str, timeout: float = 120) -> Run:
        done = subprocess.run(
            [DUST, *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return Run(tuple(args), done.returncode, done.stdout, done.stderr)

    def ok(self, *args: str) -> Run:
        result = self.run(*args)
        assert result.code == 0, str(result)
        return result

    def error(self, *args: str, says: str) -> Run:
        """The command fails with exactly one line ``dust: ...`` containing ``says``."""
        result = self.run(*args)
        assert result.code == 1, str(result)
        lines = result.stderr.splitlines()
        assert len(lines) == 1, str(result)
        assert lines[0].startswith("dust: "), str(result)
        assert says in lines[0], str(result)
        return result

    def errors(self, cases: list[tuple[list[str], str]]) -> None:
        """Several failing commands at once (each a separate process)."""
        with ThreadPoolExecutor(max_workers=6) as pool:
            runs = list(pool.map(lambda case: self.run(*case[0]), cases))
        for (_args, says), result in zip(cases, runs, strict=True):
            lines = result.stderr.splitlines()
            assert result.code == 1, str(result)
            assert len(lines) == 1 and lines[0].startswith("dust: "), str(result)
            assert says in lines[0], f"expected {says!r}\n{result}"

    # -- the worker ----------------------------------------------------------------------

    def start_worker(self) -> None:
        # A worker consuming events and requests in one process, on this installation.
        command = procfile.worker_command(
            ["dust.events", "dust.requests"],
            "--concurrency",
            "2",
            "-n",
            f"admin-{self.name}-{os.getpid()}@%h",
        )
        self.worker = procfile.Process(
            "worker", command, self.log_path, env=self.env, cwd=self.cwd
        ).start()
        try:
            self.worker.wait_ready(60)
        except procfile.ProcessFailed as exc:
            pytest.fail(str(exc), pytrace=False)

    def stop_worker(self) -> None:
        if self.worker is None:
            return
        self.worker.stop(timeout=5)
        self.worker = None

    def worker_log(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def check_worker(self) -> None:
        assert self.worker is not None and self.worker.running(), (
            f"the worker died:\n{self.worker_log()[-5000:]}"
        )

    # -- the database, read directly ----------------------------------------------------

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as connection:
            return list(connection.execute(text(sql), params))

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(text(sql), params).scalar()

    def snapshot(self) -> dict[str, Any]:
        """Row counts of every ``dust_`` table and the account totals: "nothing changed"."""
        with self.engine.connect() as connection:
            tables = sorted(
                t for t in inspect(connection).get_table_names() if t.startswith("dust_")
            )
            counts = {
                t: connection.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in tables
            }
            totals = connection.execute(
                text("SELECT coalesce(sum(balance), 0), coalesce(sum(held), 0) FROM dust_accounts")
            ).one()
        return {"counts": counts, "balance": int(totals[0]), "held": int(totals[1])}

    def wait_for_events(self, *ids: str, timeout: float = 30) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            found = {
                row[0]: row[1]
                for row in self.rows("SELECT event_id, status FROM dust_events")
                if row[0] in ids
            }
            if len(found) == len(ids):
                return found
            self.check_worker()
            if time.monotonic() > deadline:
                pytest.fail(f"events not recorded in {timeout}s: {set(ids) - set(found)}")
            time.sleep(0.1)

    def close(self) -> None:
        self.stop_worker()
        self.engine.dispose()


def insert_failed_event(installation: Installation, envelope: dict[str, Any]) -> None:
    """Record ``envelope`` as ``failed``, as the worker does when its retries run out."""
    from dust.tasks.inbox import canonical

    body = canonical(envelope)
    now = datetime.now(UTC)
    with installation.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO dust_events (event_id, name, content_hash, envelope, status, reason,"
                " received_at, attempts) VALUES (:id, :name, :hash, :body, 'failed',"
                " 'OperationalError: connection refused', :now, 6)"
            ),
            {
                "id": envelope["id"],
                "name": envelope["name"],
                "hash": hashlib.sha256(body.encode()).hexdigest(),
                "body": body,
                # SQLite keeps naive UTC text, as dust.models.base.UTCDateTime writes it.
                "now": now.replace(tzinfo=None) if installation.engine.name == "sqlite" else now,
            },
        )


def history_file(path: Path, tag: str) -> int:
    """A JSONL history (tagged ids) exercising every event kind, in ``occurred_at`` order,
    where order matters (an order spends dust earned by earlier orders), with invalid JSON
    and blank lines. Returns the number of lines."""
    lines: list[str] = []
    clock = [0]

    def envelope(name: str, data: dict[str, Any]) -> None:
        clock[0] += 1
        day, minute = divmod(clock[0], 600)
        lines.append(
            json.dumps(
                {
                    "id": f"{tag}-evt-{clock[0]}",
                    "name": name,
                    "occurred_at": f"2025-03-{1 + day:02d}T{minute // 60:02d}:{minute % 60:02d}:00Z",
                    "data": data,
                }
            )
        )

    envelope(
        "product.created",
        {"id": f"{tag}-prod-gift", "metadata": {"dust_only": True, "dust_price": 300}},
    )
    envelope("product.created", {"id": f"{tag}-prod-mug"})
    for c in range(1, 6):
        envelope("customer.created", {"id": f"{tag}-cus-{c}"})
    for n in range(1, 41):
        customer = f"{tag}-cus-{1 + n % 5}"
        spend = 60 if n > 20 and n % 4 == 0 else 0
        items = [
            {
                "id": f"{tag}-item-{n}",
                "product_id": f"{tag}-prod-mug",
                "quantity": 1,
                "total": 1500 + 250 * n,
            }
        ]
        if spend:
            items.append(
                {
                    "id": f"{tag}-item-{n}-g",
                    "product_id": f"{tag}-prod-gift",
                    "quantity": 1,
                    "total": 0,
                }
            )
        envelope(
            "order.placed",
            {
                "id": f"{tag}-ord-{n}",
                "customer_id": customer,
                "currency_code": "usd",
                "total": 1500 + 250 * n,
                "dust_total": spend,
                "items": items,
            },
        )
        if n % 7 == 0:
            envelope(
                "refund.created",
                {
                    "id": f"{tag}-ref-{n}",
                    "order_id": f"{tag}-ord-{n}",
                    "customer_id": customer,
                    "amount": 500,
                    "currency_code": "usd",
                    "to_store_credit": True,
                },
            )
        if n % 11 == 0:
            envelope("order.canceled", {"id": f"{tag}-ord-{n}"})
        if n % 9 == 0:
            lines.append(f'{{"id": "{tag}-broken-{n}", "name": ')  # invalid JSON: rejected
        if n % 13 == 0:
            lines.append("")
    envelope(
        "order.placed",
        {"id": f"{tag}-ord-guest", "customer_id": None, "currency_code": "usd", "total": 4000},
    )
    envelope(
        "refund.created",
        {
            "id": f"{tag}-ref-guest",
            "order_id": f"{tag}-ord-guest",
            "amount": 1000,
            "currency_code": "usd",
            "to_store_credit": True,
        },
    )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def ledger_of(installation: Installation, tag: str) -> dict[str, Any]:
    """What a backfill of ``history_file(tag)`` leaves, with the tag taken out, so two
    loads of two tags compare equal exactly when they gave the same ledger."""

    def untag(value: Any) -> Any:
        return value.replace(f"{tag}-", "") if isinstance(value, str) else value

    accounts = installation.rows(
        "SELECT id, customer_id, kind, currency_code, balance, held FROM dust_accounts"
        " WHERE customer_id LIKE :prefix ORDER BY customer_id, kind, currency_code",
        prefix=f"{tag}-%",
    )
    result: dict[str, Any] = {}
    for account_id, customer_id, kind, currency, balance, held in accounts:
        entries = installation.rows(
            "SELECT direction, amount, balance_after, reason, reference_type, reference_id,"
            " event_id FROM dust_entries WHERE account_id = :id ORDER BY id",
            id=account_id,
        )
        lots = installation.rows(
            "SELECT expires_at, amount, remaining, order_id FROM dust_lots"
            " WHERE account_id = :id ORDER BY id",
            id=account_id,
        )
        result[f"{untag(customer_id)}/{kind}/{currency}"] = {
            "balance": balance,
            "held": held,
            "entries": [tuple(untag(v) for v in row) for row in entries],
            "lots": [(str(e)[:19], a, r, untag(o)) for e, a, r, o in lots],
        }
    events = installation.rows(
        "SELECT event_id, status, reason FROM dust_events WHERE event_id LIKE :prefix"
        " ORDER BY event_id",
        prefix=f"{tag}-%",
    )
    result["events"] = [(untag(e), s, r) for e, s, r in events]
    orders = installation.rows(
        "SELECT order_id, earned, clawed_back, charged_dust, charged_store_credit, canceled"
        " FROM dust_orders WHERE order_id LIKE :prefix ORDER BY order_id",
        prefix=f"{tag}-%",
    )
    result["orders"] = [tuple(untag(v) for v in row) for row in orders]
    return result


def csv_rows(text_: str) -> Iterator[dict[str, str]]:
    import csv
    import io

    yield from csv.DictReader(io.StringIO(text_))
