"""What an operator meets first, through the real ``dust`` and ``celery`` commands: errors
in one line with the right exit code, ``dust health``, ``dust db current|history``,
resolving events, money and ids in tables.

Runs on the embedded default (SQLite file, file broker) in temporary working directories;
``dust health`` with a broker that is down uses a Redis URL on a port nobody listens on.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from admin_support import CELERY, DUST, Installation, Run, insert_failed_event
from sqlalchemy import text

from dust.worker import procfile

pytestmark = pytest.mark.e2e

TRACEBACK = "Traceback"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dust(cwd: Path, *args: str, timeout: float = 120, **env: str) -> Run:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DUST_")}
    done = subprocess.run(
        [DUST, *args],
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Run(tuple(args), done.returncode, done.stdout, done.stderr)


def one_line(result: Run, code: int, says: str) -> None:
    """Exit ``code`` and exactly one line ``dust: ...`` on stderr saying ``says``."""
    assert result.code == code, str(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dust: "), str(result)
    assert says in lines[0], str(result)
    assert TRACEBACK not in result.stderr + result.stdout, str(result)


# -- errors at the first touch --------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"DUST_DATABASE_URL": "garbage"}, "DUST_DATABASE_URL: not a database URL"),
        ({"DUST_DATABASE_URL": "mysql://u:p@localhost/db"}, "mysql is not supported"),
        ({"DUST_BROKER_URL": "bogus://x"}, "DUST_BROKER_URL: 'bogus' is not a broker"),
        ({"DUST_METRICS_PORT": "70000"}, "DUST_METRICS_PORT"),
        ({"DUST_LOG_FORMAT": "xml"}, "DUST_LOG_FORMAT"),
    ],
)
def test_bad_configuration_is_one_line_exit_2(tmp_path: Path, env: dict, says: str) -> None:
    one_line(dust(tmp_path, "balance", "cus_1", **env), 2, says)


def test_command_errors_are_one_line_each(tmp_path: Path) -> None:
    one_line(dust(tmp_path, "db", "upgrade", "bogusrev"), 1, "no migration 'bogusrev'")
    # an empty database: the way out, not "no such table"
    one_line(dust(tmp_path, "balance", "cus_1"), 1, "run `dust db upgrade`")
    one_line(dust(tmp_path, "events"), 1, "run `dust db upgrade`")
    one_line(dust(tmp_path, "db", "current"), 1, "run `dust db upgrade`")
    # input checked before anything is sent
    one_line(dust(tmp_path, "publish", "x.y", "--data", "[1,2]"), 1, "must be a JSON object")
    one_line(dust(tmp_path, "publish", "x.y", "--data", '"s"'), 1, "must be a JSON object")
    one_line(dust(tmp_path, "events", "--status", "bogus"), 1, "--status must be one of")
    assert not list(tmp_path.glob(".dust/broker/*.msg"))  # nothing was published


def test_db_current_and_history(tmp_path: Path) -> None:
    assert dust(tmp_path, "db", "upgrade", "0002").code == 0
    behind = dust(tmp_path, "db", "current", "--json")
    assert behind.code == 1 and json.loads(behind.stdout)["current"] == ["0002"]
    assert dust(tmp_path, "db", "upgrade").code == 0
    current = dust(tmp_path, "db", "current")
    assert current.code == 0 and "(head)" in current.stdout, str(current)
    history = dust(tmp_path, "db", "history", "--json")
    revisions = [r["revision"] for r in json.loads(history.stdout)]
    assert revisions[-2:] == ["0002", "0001"] and json.loads(current.stdout and "[]") == []
    assert json.loads(dust(tmp_path, "db", "current", "--json").stdout)["ok"] is True
    assert revisions[0] == json.loads(dust(tmp_path, "db", "current", "--json").stdout)["head"][0]


def test_a_worker_without_its_database_or_schema_does_not_start(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DUST_")}
    cases = [
        (
            {"DUST_DATABASE_URL": f"postgresql+psycopg://dust:secret@127.0.0.1:{free_port()}/x"},
            "cannot reach",
        ),
        ({}, "run `dust db upgrade`"),  # an empty SQLite file
    ]
    for env, says in cases:
        done = subprocess.run(
            [CELERY, "-A", "dust.worker.app", "worker", "--concurrency", "1", "--loglevel", "INFO"],
            cwd=tmp_path,
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode != 0, done.stdout + done.stderr
        said = done.stdout + done.stderr
        assert "worker not started" in said and says in said, said
        assert " ready." not in said and TRACEBACK not in said and "secret" not in said, said


# -- dust health --------------------------------------------------------------------------


def test_health_names_the_failing_check(tmp_path: Path) -> None:
    down_db = f"postgresql+psycopg://dust:secret@127.0.0.1:{free_port()}/x"
    found = dust(tmp_path, "health", "--json", DUST_DATABASE_URL=down_db)
    report = json.loads(found.stdout)
    assert found.code == 1 and report["ok"] is False
    checks = {c["name"]: c for c in report["checks"]}
    assert not checks["database"]["ok"] and "cannot reach" in checks["database"]["detail"]
    assert "secret" not in found.stdout + found.stderr
    assert found.stderr.strip().startswith("dust: unhealthy: database")

    found = dust(tmp_path, "health", "--json")  # an empty SQLite file: no schema
    checks = {c["name"]: c for c in json.loads(found.stdout)["checks"]}
    assert found.code == 1 and checks["database"]["ok"] and not checks["schema"]["ok"]
    assert "dust db upgrade" in checks["schema"]["detail"]

    assert dust(tmp_path, "db", "upgrade", "0002").code == 0
    found = dust(tmp_path, "health")  # schema behind
    assert found.code == 1 and "FAIL schema: at 0002" in found.stdout, str(found)

    down_broker = f"redis://127.0.0.1:{free_port()}/0"
    assert dust(tmp_path, "db", "upgrade").code == 0
    found = dust(tmp_path, "health", "--json", DUST_BROKER_URL=down_broker, timeout=60)
    checks = {c["name"]: c for c in json.loads(found.stdout)["checks"]}
    assert found.code == 1, str(found)
    assert checks["schema"]["ok"] and not checks["broker"]["ok"]
    assert not checks["workers"]["ok"]
    assert found.stderr.strip() == "dust: unhealthy: broker, workers"


# -- resolving events, money and ids in tables (a real worker on the embedded setup) -----


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    cwd = tmp_path_factory.mktemp("ops-embedded")
    installation = Installation("ops", cwd, {}, f"sqlite:///{cwd / 'dust.db'}")
    installation.ok("db", "upgrade")
    installation.start_worker()
    yield installation
    installation.close()


def test_health_names_a_queue_no_worker_consumes(embedded: Installation) -> None:
    # this installation's worker takes dust.events and dust.requests only: no jobs would
    # run (tests/e2e/test_operations.py has the Procfile's worker, all green)
    found = embedded.run("health")
    assert found.code == 1, str(found)
    assert "FAIL workers: 1 answering" in found.stdout
    assert "no worker consumes dust.jobs" in found.stdout
    assert found.stderr.strip() == "dust: unhealthy: workers"
    assert embedded.run("health", "--no-workers").code == 0


def test_a_needs_attention_event_is_resolved_and_reconciliation_is_green(
    embedded: Installation,
) -> None:
    # An order that spent 500 dust the customer never had: needs_attention.
    embedded.ok(
        "publish", "order.placed", "--id", "evt_short",
        "--data", json.dumps({"id": "ord_short", "customer_id": "cus_short",
                              "currency_code": "usd", "total": 1000, "dust_total": 500}),
    )  # fmt: skip
    assert embedded.wait_for_events("evt_short") == {"evt_short": "needs_attention"}
    assert embedded.run("reconcile").code == 1

    # A replay that is still needs_attention is not done: non-zero.
    replay = embedded.run("events", "replay", "evt_short")
    assert replay.code == 1 and "needs_attention -> needs_attention" in replay.stdout, str(replay)

    embedded.error("events", "resolve", "evt_short", says="--reason is required")
    embedded.error("events", "resolve", "evt_nope", "--reason", "x", says="no event with id")
    embedded.error(
        "events", "resolve", "evt_short", "--reason", "x", "--debit", "5",
        says="--kind is required",
    )  # fmt: skip
    # The store took 200 dust at the till by other means; the rest is forgiven.
    done = embedded.ok(
        "events", "resolve", "evt_short", "--reason", "charged 200 at the till",
        "--credit", "200", "--kind", "dust", "--actor", "alice", "--json",
    ).json()  # fmt: skip
    assert (done["previous"], done["outcome"], done["actor"]) == (
        "needs_attention",
        "resolved",
        "alice",
    )
    assert done["entry"]["amount"] == 200 and done["account"]["customer_id"] == "cus_short"
    assert done["entry"]["memo"] == "resolution of event evt_short: charged 200 at the till"
    rows = embedded.rows(
        "SELECT previous_status, reason, actor, entry_id FROM dust_event_resolutions"
        " WHERE event_id = 'evt_short'"
    )
    assert [tuple(r) for r in rows] == [
        ("needs_attention", "charged 200 at the till", "alice", done["entry"]["id"])
    ]
    embedded.error("events", "resolve", "evt_short", "--reason", "again", says="is resolved")
    shown = embedded.ok("events", "show", "evt_short", "--json").json()
    assert shown["status"] == "resolved" and shown["reason"].startswith("could not charge")
    assert shown["resolution"]["actor"] == "alice"
    assert shown["resolution"]["entry_id"] == done["entry"]["id"]

    # A failed event is resolved without a correction.
    insert_failed_event(
        embedded, {"id": "evt_dead", "name": "customer.created", "data": {"id": "cus_dead"}}
    )
    line = embedded.ok("events", "resolve", "evt_dead", "--reason", "test data").stdout
    assert line.strip().startswith("evt_dead: failed -> resolved by")

    reconcile = embedded.run("reconcile", "--json")
    assert reconcile.code == 0, str(reconcile)
    listed = embedded.ok("events", "--status", "resolved", "--json").json()
    assert {e["event_id"] for e in listed} == {"evt_short", "evt_dead"}
    # a redelivery of a resolved event changes nothing
    embedded.ok(
        "publish", "order.placed", "--id", "evt_short",
        "--data", json.dumps({"id": "ord_short", "customer_id": "cus_short",
                              "currency_code": "usd", "total": 1000, "dust_total": 500}),
    )  # fmt: skip
    time.sleep(2)
    assert embedded.scalar("SELECT status FROM dust_events WHERE event_id = 'evt_short'") == (
        "resolved"
    )
    assert embedded.run("reconcile").code == 0


def test_tables_show_money_by_currency_digits_and_whole_ids(embedded: Installation) -> None:
    for amount, currency in ((12935, "usd"), (1200, "jpy"), (12345, "kwd")):
        embedded.ok(
            "credit", "cus_money", str(amount), "--kind", "store_credit",
            "--currency", currency, "--reason", "money test", "--create",
        )  # fmt: skip
    shown = embedded.ok("balance", "cus_money").stdout
    assert "$129.35" in shown and "¥1,200" in shown and "KWD12.345" in shown, shown
    as_json = embedded.ok("balance", "cus_money", "--json").json()
    assert sorted(s["balance"] for s in as_json["store_credit"]) == [1200, 12345, 12935]
    history = embedded.ok("history", "cus_money").stdout
    assert "+$129.35" in history and "+¥1,200" in history, history

    long_id = "evt_" + "x" * 150 + "_end"
    now = datetime.now(UTC).replace(tzinfo=None)
    with embedded.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO dust_events (event_id, name, content_hash, envelope, status,"
                " received_at, attempts) VALUES (:id, 'x.y', 'h', '{}', 'ignored', :now, 1)"
            ),
            {"id": long_id, "now": now},
        )
    listed = embedded.ok("events", "--status", "ignored").stdout
    assert any(long_id in line for line in listed.splitlines()), listed


def test_json_logs_are_one_object_per_line_with_the_event_fields(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    cwd = tmp_path_factory.mktemp("ops-json-logs")
    installation = Installation(
        "jsonlogs", cwd, {"DUST_LOG_FORMAT": "json"}, f"sqlite:///{cwd / 'dust.db'}"
    )
    try:
        installation.ok("db", "upgrade")
        log = installation.log_path
        # JSON lines say "ready" without Celery's text banner: wait for that word.
        installation.worker = procfile.Process(
            "worker",
            [CELERY, "-A", "dust.worker.app", "worker", "--concurrency", "1", "--loglevel", "INFO"],
            log,
            env=installation.env,
            cwd=cwd,
            ready="ready",
        ).start()
        installation.worker.wait_ready(60)
        installation.ok(
            "publish", "customer.created", "--id", "evt_json", "--data",
            json.dumps({"id": "cus_json", "email": "secret@example.com"}),
        )  # fmt: skip
        installation.ok("publish", "order.placed", "--id", "evt_json_bad", "--data", "{}")
        installation.wait_for_events("evt_json", "evt_json_bad")
        time.sleep(1)
    finally:
        installation.close()
    lines = [
        line
        for line in installation.worker_log().splitlines()
        if line.strip() and not line.startswith("===== start")  # the harness's own marker
    ]
    # up to the shutdown, which Celery prints (not logs) on stdout
    lines = lines[: next((n for n, line in enumerate(lines) if "Warm shutdown" in line), None)]
    objects = []
    for line in lines:
        objects.append(json.loads(line))  # every line is one JSON object
    assert all({"event", "level", "time", "logger"} <= set(o) for o in objects)
    settled = {o["event_id"]: o for o in objects if "event_id" in o}
    assert settled["evt_json"]["status"] == "processed"
    assert settled["evt_json"]["event_name"] == "customer.created"
    assert settled["evt_json"]["batch_id"] and "duration_ms" in settled["evt_json"]
    assert settled["evt_json_bad"]["status"] == "rejected"
    assert settled["evt_json_bad"]["level"] == "warning"
    assert "secret@example.com" not in installation.worker_log()  # no payloads
