"""The admin one-off commands through the real ``dust`` command and a real worker process.

Most tests run on the embedded default (SQLite file and file broker in a temporary working
directory); ``test_admin_on_postgresql_and_redis`` runs the admin path on the servers
(database ``dust_admin``, Redis database 12). Every error case asserts one line
``dust: ...`` on stderr, exit code 1, and a database left exactly as it was.
"""

from __future__ import annotations

import getpass
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from admin_support import (
    DUST,
    Installation,
    csv_rows,
    history_file,
    insert_failed_event,
    ledger_of,
)
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from dust.worker import procfile

ADMIN_DATABASE_URL = os.environ.get(
    "DUST_ADMIN_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/dust_admin"
)
ADMIN_BROKER_URL = os.environ.get("DUST_ADMIN_BROKER_URL", "redis://127.0.0.1:6379/12")
ME = getpass.getuser()

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    """The embedded default in a fresh working directory, with a real worker."""
    cwd = tmp_path_factory.mktemp("admin-embedded")
    installation = Installation("embedded", cwd, {}, f"sqlite:///{cwd / 'dust.db'}")
    installation.ok("db", "upgrade")
    installation.start_worker()
    yield installation
    installation.close()


# -- adjustments -----------------------------------------------------------------------


def test_credit_and_debit_are_posted_with_reason_actor_and_lot(embedded: Installation) -> None:
    embedded.error(
        "credit", "adj-1", "500", "--kind", "dust", "--reason", "goodwill", says="unknown customer"
    )
    before = datetime.now(UTC)
    reply = embedded.ok(
        "credit", "adj-1", "500", "--kind", "dust", "--reason", "goodwill", "--create", "--json"
    ).json()
    entry = reply["entry"]
    assert reply["status"] == "ok" and reply["repeat"] is False
    assert (entry["direction"], entry["amount"], entry["reason"]) == ("credit", 500, "adjustment")
    assert (entry["actor"], entry["memo"]) == (ME, "goodwill")
    assert reply["account"]["balance"] == 500
    # Admin dust gets a lot expiring DUST_POINTS_TTL_DAYS (365) from now.
    (expires_at,) = embedded.rows(
        "SELECT l.expires_at FROM dust_lots l WHERE l.entry_id = :id", id=entry["id"]
    )[0]
    expires = datetime.fromisoformat(str(expires_at)).replace(tzinfo=UTC)
    assert before + timedelta(days=365) - timedelta(minutes=1) < expires
    assert expires < datetime.now(UTC) + timedelta(days=365)

    # The customer is known now: store credit opens its account; currency is lower-cased.
    shown = embedded.ok(
        "credit", "adj-1", "2500", "--kind", "store_credit", "--currency", "USD",
        "--reason", "late delivery", "--actor", "alice",
    )  # fmt: skip
    assert "credited 2500 usd store credit to adj-1" in shown.stdout
    assert "by alice" in shown.stdout
    shown = embedded.ok("debit", "adj-1", "200", "--kind", "dust", "--reason", "typo in #12")
    assert "debited 200 dust from adj-1" in shown.stdout and "balance 300" in shown.stdout

    balance = embedded.ok("balance", "adj-1", "--json").json()
    assert balance["dust"] == {"balance": 300, "held": 0, "pending": 0, "available": 300}
    assert [(s["currency_code"], s["balance"]) for s in balance["store_credit"]] == [("usd", 2500)]
    rows = embedded.rows(
        "SELECT e.direction, e.amount, e.reason, e.reference_type, e.actor, e.memo"
        " FROM dust_entries e JOIN dust_accounts a ON a.id = e.account_id"
        " WHERE a.customer_id = 'adj-1' ORDER BY e.id"
    )
    assert [tuple(r) for r in rows] == [
        ("credit", 500, "adjustment", "admin", ME, "goodwill"),
        ("credit", 2500, "adjustment", "admin", "alice", "late delivery"),
        ("debit", 200, "adjustment", "admin", ME, "typo in #12"),
    ]


def test_business_errors_print_one_line_and_change_nothing(embedded: Installation) -> None:
    embedded.ok("credit", "biz-1", "100", "--kind", "dust", "--reason", "seed", "--create")
    embedded.ok(
        "credit", "biz-1", "50", "--kind", "store_credit", "--currency", "eur", "--reason", "seed"
    )
    before = embedded.snapshot()
    embedded.errors(
        [
            (["debit", "nobody", "1", "--kind", "dust", "--reason", "x"], "unknown customer nobody (no accounts)"),
            (["credit", "nobody", "1", "--kind", "dust", "--reason", "x"], "unknown customer nobody (no accounts; --create opens one)"),
            (["debit", "biz-1", "101", "--kind", "dust", "--reason", "x"], "insufficient funds: available 100, requested 101"),
            (["debit", "biz-1", "51", "--kind", "store_credit", "--currency", "eur", "--reason", "x"], "insufficient funds: available 50"),
            # No usd account yet: the debit would open it; refused, nothing is left behind.
            (["debit", "biz-1", "1", "--kind", "store_credit", "--currency", "usd", "--reason", "x"], "insufficient funds: available 0"),
            (["claim", "SC-NOT-A-CODE", "biz-1"], "no account with code SC-NOT-A-CODE"),
            (["claim", "SC-NOT-A-CODE", "nobody"], "unknown customer nobody"),
            (["events", "replay", "no-such-event"], "no event with id no-such-event"),
        ]
    )  # fmt: skip
    assert embedded.snapshot() == before


#: Input the command line refuses before it enqueues anything (one line, exit 1).
BAD_INPUT = [
    (["credit", "bad-1", "0", "--kind", "dust", "--reason", "r"], "AMOUNT must be at least 1"),
    (["credit", "bad-1", "1.5", "--kind", "dust", "--reason", "r"], "AMOUNT must be a whole number"),
    (["debit", "bad-1", "abc", "--kind", "dust", "--reason", "r"], "AMOUNT must be a whole number"),
    (["credit", "bad-1", "10000000000000001", "--kind", "dust", "--reason", "r"], "at most"),
    (["credit", "bad-1", "5", "--kind", "dust"], "--reason is required"),
    (["debit", "bad-1", "5", "--kind", "dust", "--reason", "   "], "--reason is required"),
    (["credit", "bad-1", "5", "--kind", "store_credit", "--reason", "r"], "--currency is required"),
    (["debit", "bad-1", "5", "--kind", "store_credit", "--currency", "us", "--reason", "r"], "not three letters"),
    (["credit", "bad-1", "5", "--kind", "dust", "--currency", "usd", "--reason", "r"], "only for --kind store_credit"),
    (["credit", "bad-1", "5", "--kind", "points", "--reason", "r"], "--kind must be dust or store_credit"),
    (["debit", "bad-1", "5", "--reason", "r"], "--kind is required"),
    (["credit", "bad-1", "5", "--kind", "dust", "--reason", "r", "--actor", " "], "--actor must not be empty"),
    (["credit", " ", "5", "--kind", "dust", "--reason", "r"], "CUSTOMER_ID must be 1 to 200 characters"),
    (["claim", " ", "bad-1"], "CODE must be"),
    (["claim", "SC-1", " "], "CUSTOMER_ID must be"),
    (["products", "set", "prod-x"], "nothing to set"),
    (["products", "set", "prod-x", "--dust-price", "-1"], "--dust-price must be a whole number"),
    (["products", "set", "prod-x", "--dust-price", "5", "--clear-dust-price"], "not both"),
    (["events", "replay"], "give either EVENT_ID or --status"),
    (["events", "replay", "evt", "--status", "failed"], "give either EVENT_ID or --status"),
    (["events", "replay", "--status", "processed"], "--status must be failed or needs_attention"),
    (["events", "replay", "--status", "failed", "--since", "yesterday"], "not a date"),
    (["events", "replay", "evt", "--since", "2026-01-01"], "--since goes with --status"),
    (["backfill", "no-such-file.jsonl"], "no such file"),
    (["export", "--since", "soon"], "--since: 'soon' is not a date"),
    (["export", "--since", "2026-02-01", "--until", "2026-01-01"], "--since must be before --until"),
    (["export", "--since", "2026-01-01T10:00:00", "--until", "2026-01-01T09:00Z"], "--since must be before --until"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "says"), BAD_INPUT)
def test_bad_input_never_reaches_the_ledger(
    args: list[str], says: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every refusal of the validation, in process (fast): one line, exit 1, no request
    sent. The same refusals through the real command are in the subprocess tests."""
    from typer.testing import CliRunner

    from dust.cli import common
    from dust.cli.main import app

    def no_request(*_: object, **__: object) -> None:
        raise AssertionError("bad input reached the worker")

    monkeypatch.setattr(common, "call", no_request)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("dust: ") and result.stderr.count("\n") == 1, result.stderr
    assert says in result.stderr


def test_bad_input_through_the_command_changes_nothing(embedded: Installation) -> None:
    before = embedded.snapshot()
    embedded.errors(
        [
            (["credit", "bad-1", "1.5", "--kind", "dust", "--reason", "r"], "AMOUNT must be a whole number"),
            (["debit", "bad-1", "0", "--kind", "dust", "--reason", "r"], "AMOUNT must be at least 1"),
            (["credit", "bad-1", "5", "--kind", "dust"], "--reason is required"),
            (["debit", "bad-1", "5", "--kind", "store_credit", "--reason", "r"], "--currency is required"),
            (["products", "set", "prod-x", "--dust-price", "x"], "--dust-price must be a whole number"),
            (["export", "--customer", "nobody"], "unknown customer nobody"),
        ]
    )  # fmt: skip
    assert embedded.snapshot() == before


def test_idempotency_key_posts_once(embedded: Installation) -> None:
    embedded.ok("credit", "idem-1", "10", "--kind", "dust", "--reason", "seed", "--create")
    args = ["credit", "idem-1", "70", "--kind", "dust", "--reason", "ticket 881"]
    first = embedded.ok(*args, "--idempotency-key", "ticket-881", "--json").json()
    again = embedded.ok(*args, "--idempotency-key", "ticket-881", "--json").json()
    assert (first["repeat"], again["repeat"]) == (False, True)
    assert again["entry"]["id"] == first["entry"]["id"]
    assert embedded.scalar("SELECT balance FROM dust_accounts WHERE customer_id = 'idem-1'") == 80
    before = embedded.snapshot()
    embedded.error(
        "debit", "idem-1", "70", "--kind", "dust", "--reason", "ticket 881",
        "--idempotency-key", "ticket-881",
        says="idempotency key ticket-881 was already used for another adjustment",
    )  # fmt: skip
    assert embedded.snapshot() == before


# -- claims ----------------------------------------------------------------------------


def test_claim_moves_a_guest_refund_to_the_customer_once(
    embedded: Installation, tmp_path: Path
) -> None:
    events = tmp_path / "guest.jsonl"
    events.write_text(
        '{"id": "claim-evt-1", "name": "order.placed", "data": {"id": "claim-ord",'
        ' "customer_id": null, "currency_code": "usd", "total": 4000}}\n'
        '{"id": "claim-evt-2", "name": "refund.created", "data": {"id": "claim-ref",'
        ' "order_id": "claim-ord", "amount": 1200, "currency_code": "usd",'
        ' "to_store_credit": true}}\n'
    )
    embedded.ok("publish", "--file", str(events))
    statuses = embedded.wait_for_events("claim-evt-1", "claim-evt-2")
    assert set(statuses.values()) == {"processed"}
    code = embedded.scalar(
        "SELECT a.code FROM dust_refunds r JOIN dust_entries e ON e.id = r.credit_entry_id"
        " JOIN dust_accounts a ON a.id = e.account_id WHERE r.refund_id = 'claim-ref'"
    )
    assert code and code.startswith("SC-")

    before = embedded.snapshot()
    embedded.error("claim", code, "claim-cus", says="unknown customer claim-cus")
    assert embedded.snapshot() == before

    embedded.ok("credit", "claim-cus", "300", "--kind", "store_credit", "--currency", "usd",
                "--reason", "seed", "--create")  # fmt: skip
    # Codes are matched whatever their case.
    reply = embedded.ok("claim", code.lower(), "claim-cus", "--json").json()
    assert (reply["amount"], reply["code"]) == (1200, code)
    assert reply["account"]["balance"] == 1500 and reply["entry"]["actor"] == ME
    assert (
        embedded.scalar(
            "SELECT balance FROM dust_accounts WHERE customer_id = 'claim-cus'"
            " AND currency_code = 'usd'"
        )
        == 1500
    )
    assert embedded.scalar("SELECT balance FROM dust_accounts WHERE code = :c", c=code) == 0

    before = embedded.snapshot()
    embedded.error(
        "claim", code, "claim-cus", says=f"account {code} was already claimed by claim-cus"
    )
    assert embedded.snapshot() == before


# -- product settings ------------------------------------------------------------------


def test_products_set_and_list(embedded: Installation) -> None:
    shown = embedded.ok("products", "set", "prod-gift", "--dust-only", "--dust-price", "400")
    assert "created prod-gift: dust_only=true dust_price=400" in shown.stdout
    embedded.ok("products", "set", "prod-mug", "--no-dust-only")
    shown = embedded.ok("products", "set", "prod-gift", "--clear-dust-price", "--actor", "bob")
    assert "updated prod-gift: dust_only=true dust_price=none" in shown.stdout
    listed = {p["product_id"]: p for p in embedded.ok("products", "list", "--json").json()}
    assert (listed["prod-gift"]["dust_only"], listed["prod-gift"]["dust_price"]) == (True, None)
    assert listed["prod-gift"]["set_by"] == "admin:bob"
    assert listed["prod-mug"]["dust_only"] is False
    shown = embedded.ok("products", "list", "--dust-only")
    assert "prod-gift" in shown.stdout and "prod-mug" not in shown.stdout


# -- replays ---------------------------------------------------------------------------


def test_replay_reruns_needs_attention_and_failed_once_fixed(embedded: Installation) -> None:
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    embedded.ok("credit", "rp-1", "100", "--kind", "dust", "--reason", "seed", "--create")
    order = (
        '{"id": "rp-ord", "customer_id": "rp-1", "currency_code": "usd", "total": 2000,'
        ' "dust_total": 300}'
    )
    embedded.ok("publish", "order.placed", "--id", "rp-evt", "--data", order)
    assert embedded.wait_for_events("rp-evt") == {"rp-evt": "needs_attention"}

    # Replayed before the cause is fixed: still short, reported as such, and not done (1).
    shown = embedded.run("events", "replay", "rp-evt")
    assert shown.code == 1, str(shown)
    assert shown.stdout.startswith("rp-evt: needs_attention -> needs_attention")

    embedded.ok("credit", "rp-1", "500", "--kind", "dust", "--reason", "cover rp-ord")
    shown = embedded.ok("events", "replay", "--status", "needs_attention", "--since", since)
    assert "rp-evt: needs_attention -> processed" in shown.stdout
    assert "replayed 1 event(s): 1 processed" in shown.stdout
    charged = embedded.scalar("SELECT charged_dust FROM dust_orders WHERE order_id = 'rp-ord'")
    assert charged == 300

    # A processed event is a no-op, said so; replaying again changes nothing.
    before = embedded.snapshot()
    reply = embedded.ok("events", "replay", "rp-evt", "--json").json()
    assert (reply["previous"], reply["outcome"]) == ("processed", "unchanged")
    assert embedded.snapshot() == before

    # A failed event (retries ran out while the database was down) runs once replayed.
    insert_failed_event(
        embedded,
        {"id": "rp-failed", "name": "customer.created", "occurred_at": "2026-11-20T10:00:00Z",
         "data": {"id": "rp-late"}},
    )  # fmt: skip
    replies = embedded.ok("events", "replay", "--status", "failed", "--json").json()
    assert [(r["event_id"], r["previous"], r["outcome"]) for r in replies] == [
        ("rp-failed", "failed", "processed")
    ]
    assert embedded.scalar("SELECT count(*) FROM dust_accounts WHERE customer_id = 'rp-late'") == 1
    shown = embedded.ok("events", "replay", "--status", "failed")
    assert "nothing to replay" in shown.stdout


# -- backfill --------------------------------------------------------------------------


def test_backfill_interrupted_then_resumed_equals_a_straight_run(
    embedded: Installation, tmp_path: Path
) -> None:
    straight, resumed = tmp_path / "straight.jsonl", tmp_path / "resumed.jsonl"
    lines = history_file(straight, "bfs")
    assert history_file(resumed, "bfr") == lines
    batches = -(-lines // 10)

    shown = embedded.ok("backfill", str(straight), "--batch-size", "10")
    assert f"{lines} lines of {straight}" in shown.stdout

    # Interrupt a load of the same history (other ids) after a few batches: kill -9.
    process = subprocess.Popen(
        [DUST, "backfill", str(resumed), "--batch-size", "10"],
        cwd=embedded.cwd,
        env=embedded.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    count_done = (
        "SELECT count(*) FROM dust_backfill_batches b JOIN dust_backfills f"
        " ON f.id = b.backfill_id WHERE f.path = :path"
    )
    deadline = time.monotonic() + 60
    while embedded.scalar(count_done, path=str(resumed)) < 3:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no batch done in 60s"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    time.sleep(1)  # the batch in flight finishes in the worker
    done = embedded.scalar(count_done, path=str(resumed))
    assert 3 <= done < batches, f"the load was not interrupted part-way ({done}/{batches})"
    assert (
        embedded.scalar("SELECT status FROM dust_backfills WHERE path = :p", p=str(resumed))
        == "running"
    )

    shown = embedded.ok("backfill", str(resumed), "--batch-size", "10", "--json")
    assert "resuming backfill" in shown.stderr
    summary = shown.json()
    assert summary["status"] == "finished" and summary["lines"] == lines
    assert summary["events"]["rejected"] == 4  # the four invalid JSON lines
    assert embedded.scalar(count_done, path=str(resumed)) == batches

    expected = ledger_of(embedded, "bfs")
    assert len(expected) > 10 and any(status == "processed" for _, status, _ in expected["events"])
    assert ledger_of(embedded, "bfr") == expected

    # Loaded again: recognised by its fingerprint, nothing changes.
    before = embedded.snapshot()
    shown = embedded.ok("backfill", str(resumed))
    assert "already loaded" in shown.stdout
    assert embedded.snapshot() == before


# -- export ----------------------------------------------------------------------------


def test_export_streams_entries_as_csv(embedded: Installation, tmp_path: Path) -> None:
    embedded.ok("credit", "exp-1", "40", "--kind", "dust", "--reason", "first", "--create")
    time.sleep(0.05)
    middle = datetime.now(UTC)
    time.sleep(0.05)
    embedded.ok("debit", "exp-1", "15", "--kind", "dust", "--reason", "second, with a comma")

    rows = list(csv_rows(embedded.ok("export", "--customer", "exp-1").stdout))
    assert [(r["direction"], r["amount"], r["balance_after"], r["memo"]) for r in rows] == [
        ("credit", "40", "40", "first"),
        ("debit", "15", "25", "second, with a comma"),
    ]
    assert rows[0]["customer_id"] == "exp-1" and rows[0]["actor"] == ME
    assert list(rows[0]) == [
        "id", "created_at", "customer_id", "kind", "currency_code", "direction", "amount",
        "balance_after", "reason", "reference_type", "reference_id", "event_id", "actor", "memo",
    ]  # fmt: skip

    after = embedded.ok("export", "--customer", "exp-1", "--since", middle.isoformat()).stdout
    assert [r["memo"] for r in csv_rows(after)] == ["second, with a comma"]
    until = embedded.ok("export", "--customer", "exp-1", "--until", middle.isoformat()).stdout
    assert [r["memo"] for r in csv_rows(until)] == ["first"]

    # Everything, to a file: the same rows as the whole ledger.
    target = tmp_path / "entries.csv"
    shown = embedded.ok("export", "--output", str(target))
    total = embedded.scalar("SELECT count(*) FROM dust_entries")
    assert f"exported {total} entries to {target}" in shown.stderr
    assert len(list(csv_rows(target.read_text()))) == total
    assert not target.with_name("entries.csv.partial").exists()
    embedded.error("export", "--output", str(tmp_path / "missing" / "x.csv"), says="cannot write")


def test_admin_tasks_are_registered_and_worker_survived(embedded: Installation) -> None:
    from dust.worker import names as task_names

    names = [
        task_names.ADJUST, task_names.CLAIM, task_names.SET_PRODUCT,
        task_names.REPLAY, task_names.BACKFILL_BATCH,
    ]  # fmt: skip
    log = embedded.worker_log()
    for name in names:
        assert f". {name}" in log, f"{name} not registered by the worker"
    embedded.check_worker()
    assert "Traceback" not in log, log[-5000:]


# -- on the servers --------------------------------------------------------------------


def _unreachable() -> str | None:
    return procfile.unreachable(ADMIN_DATABASE_URL, ADMIN_BROKER_URL, first_line=True)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    import redis

    problem = _unreachable()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem}; CI=true needs the servers", pytrace=False)
        pytest.skip(problem)
    url = make_url(ADMIN_DATABASE_URL)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
        )
        if not exists:
            connection.execute(text(f'CREATE DATABASE "{url.database}"'))
    admin.dispose()
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    broker = redis.Redis.from_url(ADMIN_BROKER_URL)
    broker.flushdb()
    cwd = tmp_path_factory.mktemp("admin-services")
    env = {"DUST_DATABASE_URL": ADMIN_DATABASE_URL, "DUST_BROKER_URL": ADMIN_BROKER_URL}
    installation = Installation("services", cwd, env, ADMIN_DATABASE_URL)
    installation.ok("db", "upgrade")
    installation.start_worker()
    yield installation
    installation.close()
    broker.flushdb()


@pytest.mark.services
def test_admin_on_postgresql_and_redis(services: Installation, tmp_path: Path) -> None:
    before = services.snapshot()
    services.errors(
        [
            (["credit", "pg-1", "500", "--kind", "dust", "--reason", "seed"], "unknown customer pg-1"),
            (["credit", "pg-1", "5.0", "--kind", "dust", "--reason", "seed"], "AMOUNT must be a whole number"),
            (["claim", "SC-NOPE", "pg-1", "--create"], "no account with code SC-NOPE"),
        ]
    )  # fmt: skip
    assert services.snapshot() == before

    services.ok("credit", "pg-1", "500", "--kind", "dust", "--reason", "seed", "--create")
    before = services.snapshot()
    services.error(
        "debit", "pg-1", "501", "--kind", "dust", "--reason", "x", says="insufficient funds"
    )
    assert services.snapshot() == before
    services.ok("debit", "pg-1", "120", "--kind", "dust", "--reason", "correction")
    services.ok("products", "set", "pg-prod", "--dust-only", "--dust-price", "250")
    assert services.ok("products", "list", "--json").json()[0]["dust_price"] == 250

    insert_failed_event(
        services,
        {"id": "pg-failed", "name": "customer.created", "data": {"id": "pg-late"}},
    )
    shown = services.ok("events", "replay", "pg-failed")
    assert "pg-failed: failed -> processed" in shown.stdout

    history = tmp_path / "history.jsonl"
    lines = history_file(history, "pgb")
    summary = services.ok("backfill", str(history), "--batch-size", "25", "--json").json()
    assert summary["lines"] == lines and summary["events"]["rejected"] == 4
    assert services.scalar("SELECT count(*) FROM dust_backfill_batches") == -(-lines // 25)

    rows = list(csv_rows(services.ok("export", "--customer", "pg-1").stdout))
    assert [(r["direction"], r["amount"], r["memo"]) for r in rows] == [
        ("credit", "500", "seed"),
        ("debit", "120", "correction"),
    ]
    exported = services.ok("export").stdout
    assert len(list(csv_rows(exported))) == services.scalar("SELECT count(*) FROM dust_entries")
    services.check_worker()
