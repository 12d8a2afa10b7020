"""Security: credentials never reach a log or an error message; Redis with a password.

* The ``dust`` command, run with a database and a broker URL holding a password, both
  unreachable, prints one line naming the server with the password masked.
* A worker whose broker needs a password processes events; a client without the password
  cannot publish. Its logs, and those of workers whose database or broker is down (URLs
  with a password), never show the password.
* The reason recorded for a failed event (``dust.tasks.inbox.safe_message``) masks it too.

(Pickle refused unread: ``tests/e2e/test_e2e_events.py`` and ``tests/e2e/test_fuzz_worker.py``;
admin actors and reasons: ``tests/test_admin_cli.py``.)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from dust.tasks.inbox import record_failed, safe_message, scrub
from dust.worker import procfile

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PASSWORD = "s3cretPW"
UNREACHABLE_DB = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/x"
SERVER_URL = os.environ.get(
    "DUST_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/dust_test"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env(**dust: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DUST_")}
    return {**base, **dust, "PYTHONUNBUFFERED": "1"}


# -- error messages --------------------------------------------------------------------


def test_safe_message_masks_credentials_in_any_url() -> None:
    for error in (
        RuntimeError(f"cannot connect to redis://:{PASSWORD}@127.0.0.1:6399/0"),
        RuntimeError(f"\nRetry with postgresql+psycopg://postgres:{PASSWORD}@db/x failed\nmore"),
        ValueError(f"amqp://guest:{PASSWORD}@rabbit// and rediss://u:{PASSWORD}@r:6380/1"),
    ):
        shown = safe_message(error)
        assert PASSWORD not in shown and "***@" in shown, shown
    assert scrub(f"redis://:{PASSWORD}@h/0") == "redis://***@h/0"


def test_a_failed_event_records_no_credentials(dust: Any) -> None:
    envelope = {"id": "evt_sec_1", "name": "customer.created", "data": {"id": "cus_1"}}
    record_failed(envelope, ConnectionError(f"lost postgresql://postgres:{PASSWORD}@db:5432/x"))
    row = dust.event("evt_sec_1")
    assert row is not None and row.status == "failed"
    assert PASSWORD not in row.reason and "ConnectionError" in row.reason


# -- the command line ------------------------------------------------------------------

COMMANDS = [
    ["db", "upgrade"],
    ["balance", "cus_1", "--json"],
    ["events"],
    ["reconcile", "--json"],
    # `dust publish` and `dust credit` (the broker) say the same in one line, after kombu's
    # connection retries (15-30 s): checked by hand, too slow for every run
]


def test_commands_with_unreachable_servers_print_one_line_without_the_password(
    tmp_path: Path,
) -> None:
    broker = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    environment = env(DUST_DATABASE_URL=UNREACHABLE_DB, DUST_BROKER_URL=broker)
    running = [
        (
            command,
            subprocess.Popen(
                [str(BIN / "dust"), *command],
                cwd=tmp_path,
                env=environment,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
        for command in COMMANDS
    ]
    for command, process in running:
        out, err = process.communicate(timeout=120)
        assert process.returncode != 0, (command, out, err)
        assert PASSWORD not in out + err, (command, out, err)
        assert "Traceback" not in err, (command, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("dust: "), (command, err)
        assert "***" in lines[0] or "cannot reach" in lines[0] or "OperationalError" in lines[0]


# -- workers: Redis with a password, and servers that are down ---------------------------


@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    server = shutil.which("redis-server")
    if server is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server not installed; CI=true needs it", pytrace=False)
        pytest.skip("redis-server not installed")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis-auth")
    process = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port, password=PASSWORD)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def secured_database() -> str:
    """Database ``dust_security`` on the test server, migrated; its URL holds a password
    (the test server trusts local connections, so any password is accepted)."""
    admin_url = make_url(SERVER_URL).set(database="postgres")
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text("DROP DATABASE IF EXISTS dust_security WITH (FORCE)"))
            connection.execute(text("CREATE DATABASE dust_security"))
        admin.dispose()
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL unreachable: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL unreachable: {type(exc).__name__}")
    url = (
        make_url(SERVER_URL)
        .set(database="dust_security", password=PASSWORD)
        .render_as_string(hide_password=False)
    )
    done = subprocess.run(
        [str(BIN / "dust"), "db", "upgrade"],
        cwd=ROOT,
        env=env(DUST_DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    return url


class Worker(procfile.Process):
    def __init__(self, name: str, log: Path, **dust: str) -> None:
        command = procfile.worker_command(
            ["dust.events", "dust.requests"], "--pool", "solo", "-n", f"{name}@%h"
        )
        env_vars = env(DUST_VISIBILITY_TIMEOUT_SECONDS="20", **dust)
        super().__init__(name, command, log, env=env_vars, cwd=ROOT)
        self.start()

    def text(self) -> str:
        return self.log_since(self.log_offset)

    def wait_for(self, marker: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.text():
            assert self.running(), f"{self.name} exited:\n{self.text()}"
            assert time.monotonic() < deadline, f"{self.name}: no {marker!r}:\n{self.text()}"
            time.sleep(0.1)

    def stop(self, timeout: float = 15) -> None:
        super().stop(timeout)


def publish(broker: str, envelope: dict[str, Any]) -> None:
    client = Celery("security-client", broker=broker)
    client.conf.update(
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry=False,
        broker_connection_max_retries=0,
        broker_transport_options={"max_retries": 0},
    )
    try:
        client.send_task(
            "dust.handle_event",
            args=[envelope],
            queue="dust.events",
            retry=False,
            ignore_result=True,
        )
    finally:
        client.close()


@pytest.mark.services
def test_workers_use_a_redis_password_and_never_log_it(
    redis_with_password: int, secured_database: str, tmp_path: Path
) -> None:
    port = redis_with_password
    broker = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    workers = [
        # everything reachable, both URLs with the password
        Worker(
            "sec_ok",
            tmp_path / "ok.log",
            DUST_DATABASE_URL=secured_database,
            DUST_BROKER_URL=broker,
            DUST_RESULT_BACKEND=broker,
        ),
        # its database is down: it refuses to start, saying so without the password
        Worker(
            "sec_nodb",
            tmp_path / "nodb.log",
            DUST_DATABASE_URL=UNREACHABLE_DB,
            DUST_BROKER_URL=f"redis://:{PASSWORD}@127.0.0.1:{port}/1",
        ),
        # its broker is down
        Worker(
            "sec_nobroker",
            tmp_path / "nobroker.log",
            DUST_DATABASE_URL=secured_database,
            DUST_BROKER_URL=f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0",
        ),
    ]
    ok, nodb, nobroker = workers
    try:
        ok.wait_for(" ready.")
        assert nodb.proc is not None and nodb.proc.wait(timeout=60) != 0, nodb.text()
        assert "worker not started: database: cannot reach" in nodb.text(), nodb.text()
        assert " ready." not in nodb.text()
        event = {"id": "evt_sec_ok", "name": "customer.created", "data": {"id": "cus_sec"}}
        publish(broker, event)
        engine = create_engine(secured_database)
        deadline = time.monotonic() + 60
        try:
            while True:
                with engine.connect() as connection:
                    status = connection.scalar(
                        text("SELECT status FROM dust_events WHERE event_id = 'evt_sec_ok'")
                    )
                if status is not None:
                    break
                assert time.monotonic() < deadline, ok.text()
                time.sleep(0.1)
        finally:
            engine.dispose()
        assert status == "processed"

        # without the password (or with a wrong one), nothing can be published
        for wrong in (f"redis://127.0.0.1:{port}/0", f"redis://:nope@127.0.0.1:{port}/0"):
            with pytest.raises(Exception) as refused:
                publish(wrong, {**event, "id": "evt_sec_refused"})
            said = str(refused.value).lower()
            assert "auth" in said or "password" in said, said
            assert not redis.Redis(port=port, password=PASSWORD).llen("dust.events")

        nobroker.wait_for("Cannot connect to")
    finally:
        for worker in workers:
            worker.stop()
    for worker in workers:
        log = worker.text()
        assert PASSWORD not in log, f"{worker.name} logged the password:\n{log}"
    assert f"redis://:**@127.0.0.1:{port}" in ok.text()  # the banner shows the URL, masked


# -- Celery message signing ---------------------------------------------------------------

SIGNED_PUBLISHER = """
import json, sys
from celery import Celery
key, cert, store, broker, envelope = sys.argv[1:]
app = Celery("signed-client", broker=broker)
if key:
    app.conf.update(task_serializer="auth", accept_content=["auth"], security_key=key,
                    security_certificate=cert, security_cert_store=store, security_digest="sha256")
    app.setup_security(allowed_serializers=["json"], serializer="json")
else:
    app.conf.update(task_serializer="json", accept_content=["json"])
app.send_task("dust.handle_event", args=[json.loads(envelope)], queue="dust.events",
              ignore_result=True)
"""


def make_identity(folder: Path, name: str) -> tuple[Path, Path]:
    """A private key and a self-signed certificate (PEM files), valid for a day."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    # keys apart from the certificates: a store directory must hold certificates only
    (folder.parent / "keys").mkdir(exist_ok=True)
    key_path, cert_path = folder.parent / "keys" / f"{name}.key", folder / f"{name}.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def publish_as(identity: tuple[Path, Path] | None, store: Path, broker: str, event: Any) -> None:
    import json

    key, cert = identity or ("", "")
    done = subprocess.run(
        [sys.executable, "-c", SIGNED_PUBLISHER, str(key), str(cert), str(store), broker]
        + [json.dumps(event)],
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.services
def test_a_signing_worker_takes_signed_messages_and_refuses_unsigned_and_forged(
    redis_with_password: int, secured_database: str, tmp_path: Path
) -> None:
    pytest.importorskip("cryptography")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    platform = make_identity(trusted, "platform")  # the publisher the worker trusts
    worker_identity = make_identity(trusted, "worker")
    forger_store = tmp_path / "forger"
    forger_store.mkdir()
    forger = make_identity(forger_store, "forger")  # a key the worker has never seen
    broker = f"redis://:{PASSWORD}@127.0.0.1:{redis_with_password}/2"
    worker = Worker(
        "sec_signed",
        tmp_path / "signed.log",
        DUST_DATABASE_URL=secured_database,
        DUST_BROKER_URL=broker,
        DUST_SIGNING_KEY_FILE=str(worker_identity[0]),
        DUST_SIGNING_CERT_FILE=str(worker_identity[1]),
        DUST_SIGNING_CERT_STORE=str(trusted),
    )

    def event(n: str) -> dict[str, Any]:
        return {"id": f"evt_sig_{n}", "name": "customer.created", "data": {"id": f"cus_sig_{n}"}}

    engine = create_engine(secured_database)

    def status(n: str) -> Any:
        with engine.connect() as connection:
            return connection.scalar(
                text("SELECT status FROM dust_events WHERE event_id = :e"), {"e": f"evt_sig_{n}"}
            )

    try:
        worker.wait_for(" ready.")
        publish_as(None, trusted, broker, event("unsigned"))
        publish_as(forger, forger_store, broker, event("forged"))
        publish_as(platform, trusted, broker, event("signed"))
        deadline = time.monotonic() + 60
        while status("signed") is None:
            assert time.monotonic() < deadline, worker.text()
            time.sleep(0.1)
        assert status("signed") == "processed"
        worker.wait_for("Refusing to deserialize untrusted content of type json")
        time.sleep(1)
        assert status("unsigned") is None and status("forged") is None
        with engine.connect() as connection:
            opened = connection.scalar(
                text("SELECT COUNT(*) FROM dust_accounts WHERE customer_id LIKE 'cus_sig_%'")
            )
        assert opened == 1  # the signed event's customer only
        assert worker.running()
    finally:
        worker.stop()
        engine.dispose()
    assert PASSWORD not in worker.text()


def test_signing_settings_come_all_three_or_not_at_all(tmp_path: Path, monkeypatch: Any) -> None:
    from dust.worker.settings import ConfigError, Settings, get_settings

    assert Settings().signing is False  # the default: plain JSON, as before
    key = tmp_path / "k.key"
    key.write_text("x")
    monkeypatch.setenv("DUST_SIGNING_KEY_FILE", str(key))
    get_settings.cache_clear()
    with pytest.raises(ConfigError, match="DUST_SIGNING_CERT_STORE: message signing needs"):
        get_settings()
    monkeypatch.setenv("DUST_SIGNING_CERT_FILE", str(tmp_path / "missing.pem"))
    monkeypatch.setenv("DUST_SIGNING_CERT_STORE", str(tmp_path))
    get_settings.cache_clear()
    with pytest.raises(ConfigError, match="DUST_SIGNING_CERT_FILE: no such file"):
        get_settings()
    get_settings.cache_clear()
