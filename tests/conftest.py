"""Fixtures shared by the unit and integration tests (not ``tests/e2e``).

Every database test runs twice: on SQLite (a fresh copy of a file migrated once per session)
and on PostgreSQL (database ``dust_test``, schema rebuilt once per session, tables truncated
before each test). PostgreSQL being unreachable skips its half, except under ``CI=true``,
where it fails: CI must never pass by skipping.

The ``dust`` fixture drives the real entry point (``dust.tasks.inbox.process``) against the test
database and reads the ledger back; the ``session`` fixture is for pure ledger tests.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from dust.ledger import holds as holds_
from dust.ledger import journal
from dust.ledger.accounts import ensure_account, lock_accounts
from dust.ledger.journal import Ref
from dust.models import Account, Base, CustomerGroups, Entry, Event, Hold, Lot
from dust.models.schema import upgrade
from dust.models.tables import DUST, STORE_CREDIT
from dust.worker import db as worker_db
from dust.worker.settings import Settings, get_settings

PG_DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/dust_test"

#: The instant test events occur at, unless a test says otherwise.
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _settings_only_from_the_test(request: pytest.FixtureRequest, monkeypatch: Any) -> None:
    """A developer's or CI's ``DUST_*`` settings must not leak into these tests (e2e tests
    build their workers' environment themselves and are left alone)."""
    if "e2e" in request.node.path.parts:
        return
    for name in Settings.model_fields:
        monkeypatch.delenv(f"DUST_{name.upper()}", raising=False)
    get_settings.cache_clear()


# -- databases -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once; each test gets its own copy."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    upgrade(f"sqlite:///{path}")
    # Fold the write-ahead log into the main file so a plain copy is complete.
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=DELETE")
    connection.close()
    return path


def _create_database(url: str) -> None:
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": target.database},
            )
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{target.database}"'))
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``dust_test`` with a schema built from the migration, once per session.

    Each test session works in its own PostgreSQL schema (``search_path`` in the URL), so
    two test runs on one server (a developer's and CI's, or two engineers') never truncate
    or drop each other's tables. The schema is dropped and rebuilt at the start, so a stale
    schema never lingers, and dropped at the end.
    """
    server_url = os.environ.get("DUST_TEST_DATABASE_URL", PG_DEFAULT_URL)
    schema = f"dust_test_run_{os.getpid()}"
    url = (
        make_url(server_url)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )
    try:
        _create_database(server_url)
        _run_sql(server_url, f"DROP SCHEMA IF EXISTS {schema} CASCADE", f"CREATE SCHEMA {schema}")
    except OperationalError as exc:
        message = f"PostgreSQL unreachable ({str(exc.orig).strip().splitlines()[0]})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI=true needs it", pytrace=False)
        pytest.skip(message)
    upgrade(url)
    yield url
    worker_db.dispose_engines()
    _run_sql(server_url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _run_sql(url: str, *statements: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


#: Tables whose triggers refuse deletes (the journal, the earn rules and their history).
APPEND_ONLY_TABLES = ("dust_entries", "dust_earn_rules", "dust_earn_rule_changes")


@pytest.fixture(scope="session")
def empty_postgres(postgres_url: str) -> Iterator[Callable[[], None]]:
    """Empties every ``dust_`` table of the test schema, children first.

    DELETE with the append-only triggers disabled inside the same transaction (the tables'
    owner may) costs a few milliseconds; TRUNCATE costs a few hundred on every test.
    """
    engine = create_engine(postgres_url)
    with engine.connect() as connection:
        existing = set(dust_tables(connection))
    known = [t.name for t in reversed(Base.metadata.sorted_tables) if t.name in existing]
    order = sorted(existing - set(known)) + known
    guarded = [t for t in APPEND_ONLY_TABLES if t in existing]
    statements = [
        *(f"ALTER TABLE {table} DISABLE TRIGGER USER" for table in guarded),
        *(f"DELETE FROM {table}" for table in order),
        *(f"ALTER TABLE {table} ENABLE TRIGGER USER" for table in guarded),
    ]

    def empty() -> None:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))

    yield empty
    engine.dispose()


@pytest.fixture
def db(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    """An empty, migrated database, and the process's engine and settings pointed at it."""
    if backend == "sqlite":
        path = tmp_path / "dust.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("postgres_url")
        request.getfixturevalue("empty_postgres")()
    monkeypatch.setenv("DUST_DATABASE_URL", url)
    _reset_process_state(keep=url)
    yield url
    _reset_process_state(keep=url if backend == "postgresql" else None)


def dust_tables(connection: Any) -> list[str]:
    """Every ``dust_`` table of the migrated schema (later migrations add more)."""
    return sorted(t for t in inspect(connection).get_table_names() if t.startswith("dust_"))


def _reset_process_state(keep: str | None = None) -> None:
    """Forget cached settings and every engine but the one for ``keep`` (the PostgreSQL
    engine outlives a test: its schema does too, and connecting costs)."""
    get_settings.cache_clear()
    for key, engine in list(worker_db._engines.items()):
        if key[1] != keep:
            engine.dispose()
            del worker_db._engines[key]


@pytest.fixture
def configure(db: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``configure(DUST_EARN_RATES='{"jpy": "1"}', ...)``: set settings for this test."""

    def apply(**env: str) -> None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    return apply


@pytest.fixture
def session(db: str) -> Iterator[Session]:
    """A session on the test database; the test commits or the fixture rolls back."""
    with Session(worker_db.get_engine()) as session:
        yield session


# -- the ledger, driven through the real entry point -----------------------------------


class Dust:
    """Sends envelopes through ``dust.tasks.inbox.process`` and reads the ledger back."""

    def __init__(self) -> None:
        self._sequence = 0

    # events

    def send(
        self,
        name: str,
        data: dict[str, Any],
        *,
        event_id: str | None = None,
        occurred_at: datetime | None = T0,
    ) -> Any:
        """Process one event; ``event_id`` defaults to a fresh unique id."""
        from dust.tasks.inbox import process

        if event_id is None:
            self._sequence += 1
            event_id = f"evt_{self._sequence}_{name}_{data.get('id')}"
        envelope: dict[str, Any] = {"id": event_id, "name": name, "data": data}
        if occurred_at is not None:
            envelope["occurred_at"] = occurred_at.isoformat()
        return process(envelope)

    def process(self, raw: Any) -> Any:
        from dust.tasks.inbox import process

        return process(raw)

    def order(
        self,
        order_id: str,
        customer_id: str | None,
        total: int,
        *,
        occurred_at: datetime = T0,
        **fields: Any,
    ) -> Any:
        data = {"id": order_id, "customer_id": customer_id, "currency_code": "usd"}
        data.update(total=total, **fields)
        return self.send("order.placed", data, occurred_at=occurred_at)

    def refund(self, refund_id: str, order_id: str, amount: int, **fields: Any) -> Any:
        data = {"id": refund_id, "order_id": order_id, "amount": amount}
        data.update({"currency_code": "usd", "to_store_credit": True, **fields})
        return self.send("refund.created", data)

    def cancel(self, order_id: str) -> Any:
        return self.send("order.canceled", {"id": order_id})

    # direct ledger operations, each in its own transaction like the real tasks

    def reserve(
        self,
        customer_id: str,
        cart_id: str,
        amount: int,
        kind: str = DUST,
        currency: str | None = None,
    ) -> holds_.Reservation:
        with worker_db.session_scope() as session:
            account_id = ensure_account(session, customer_id, kind, currency)
            account = lock_accounts(session, [account_id])[account_id]
            return holds_.reserve(session, account, cart_id, amount, ttl_seconds=3600)

    def grant(
        self,
        customer_id: str,
        amount: int,
        kind: str = DUST,
        currency: str | None = None,
        expires_at: datetime | None = None,
        order_id: str | None = None,
    ) -> int:
        """Credit an account directly (a test's way of funding it); returns the entry id."""
        with worker_db.session_scope() as session:
            account_id = ensure_account(session, customer_id, kind, currency)
            account = lock_accounts(session, [account_id])[account_id]
            self._sequence += 1
            ref = Ref("adjustment", "admin", f"grant_{self._sequence}", actor="test")
            entry = journal.credit(
                session, account, amount, ref, expires_at=expires_at, order_id=order_id
            )
            return entry.id

    # reading back

    def balance(self, customer_id: str) -> dict[str, Any]:
        from dust.ledger import reports

        with worker_db.session_scope() as session:
            return reports.balance(session, customer_id)

    def dust(self, customer_id: str) -> int:
        return int(self.balance(customer_id)["dust"]["balance"])

    def store_credit(self, customer_id: str, currency: str = "usd") -> int:
        for account in self.balance(customer_id)["store_credit"]:
            if account["currency_code"] == currency:
                return int(account["balance"])
        return 0

    def lots(self, customer_id: str) -> list[tuple[datetime | None, int, int]]:
        """The customer's open lots as ``(expires_at, remaining, amount)``, soonest first."""
        with worker_db.session_scope() as session:
            rows = session.execute(
                select(Lot.expires_at, Lot.remaining, Lot.amount)
                .join(Account, Account.id == Lot.account_id)
                .where(Account.customer_id == customer_id, Lot.remaining > 0)
            ).all()
        far = datetime.max.replace(tzinfo=UTC)
        return sorted(((e, r, a) for e, r, a in rows), key=lambda lot: (lot[0] or far, lot[1]))

    def snapshot(self, customer_id: str) -> dict[str, Any]:
        """What must not depend on arrival order: balances, held, open lots (no ids)."""
        balance = self.balance(customer_id)
        return {
            "dust": balance["dust"],
            "store_credit": sorted(
                (sc["currency_code"], sc["balance"], sc["held"]) for sc in balance["store_credit"]
            ),
            "lots": [(expires, remaining) for expires, remaining, _ in self.lots(customer_id)],
        }

    def event(self, event_id: str) -> Event | None:
        with worker_db.session_scope() as session:
            return session.get(Event, event_id)

    def count(self, table: str) -> int:
        with worker_db.session_scope() as session:
            return int(session.scalar(text(f"SELECT count(*) FROM {table}")) or 0)

    def counts(self) -> dict[str, int]:
        """Rows per ``dust_`` table: a whole-database fingerprint for "nothing changed"."""
        with worker_db.session_scope() as session:
            tables = dust_tables(session.connection())
            return {t: int(session.scalar(text(f"SELECT count(*) FROM {t}")) or 0) for t in tables}

    def entries(self, **where: Any) -> list[Entry]:
        with worker_db.session_scope() as session:
            stmt = select(Entry).filter_by(**where).order_by(Entry.id)
            return list(session.scalars(stmt))

    def accounts(self) -> list[Account]:
        with worker_db.session_scope() as session:
            return list(session.scalars(select(Account).order_by(Account.id)))

    def check_invariants(self) -> None:
        """I1–I4, I6 and I7 of the ledger, for every account."""
        with worker_db.session_scope() as session:
            check_invariants(session)


def check_invariants(session: Session) -> None:
    for account in session.scalars(select(Account)):
        credits = session.scalar(
            select(func.coalesce(func.sum(Entry.amount), 0)).where(
                Entry.account_id == account.id, Entry.direction == "credit"
            )
        )
        debits = session.scalar(
            select(func.coalesce(func.sum(Entry.amount), 0)).where(
                Entry.account_id == account.id, Entry.direction == "debit"
            )
        )
        assert account.balance == credits - debits, f"I1 broken on account {account.id}"
        held = session.scalar(
            select(func.coalesce(func.sum(Hold.amount), 0)).where(
                Hold.account_id == account.id, Hold.status == "active"
            )
        )
        assert account.held == held, f"I2 broken on account {account.id}"
        if account.kind == STORE_CREDIT:
            assert account.balance >= account.held >= 0, f"I3 broken on account {account.id}"
        else:
            lots = session.scalar(
                select(func.coalesce(func.sum(Lot.remaining), 0)).where(
                    Lot.account_id == account.id
                )
            )
            assert lots == max(account.balance, 0), f"I4 broken on account {account.id}"
            pending = session.scalar(
                select(func.coalesce(func.sum(Lot.remaining), 0)).where(
                    Lot.account_id == account.id, Lot.pending_until.is_not(None)
                )
            )
            assert account.pending == pending, f"I6 broken on account {account.id}"
            latest = session.execute(
                select(
                    CustomerGroups.occurred_at, CustomerGroups.event_id, CustomerGroups.group_ids
                )
                .where(CustomerGroups.customer_id == account.customer_id)
                .order_by(CustomerGroups.occurred_at.desc(), CustomerGroups.event_id.desc())
                .limit(1)
            ).one_or_none()
            copy = (account.groups_at, account.groups_event_id, account.group_ids)
            assert copy == (tuple(latest) if latest else (None, None, None)), (
                f"I7 broken on account {account.id}: {copy} is not the latest group record"
            )


@pytest.fixture
def invariants() -> Any:
    """``invariants(session)`` asserts I1–I4, I6 and I7 for every account."""
    return check_invariants


@pytest.fixture
def dust(db: str) -> Iterator[Dust]:
    helper = Dust()
    yield helper
    helper.check_invariants()
