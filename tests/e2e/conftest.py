"""End-to-end fixtures: real ``celery worker`` processes on PostgreSQL and Redis.

Workers are started the way the Procfile starts them (plus a node name and a fixed pool),
as subprocesses with their own ``DUST_*`` environment. Tests publish with a *bare* Celery
client that knows nothing of the project (task names and queues only, as the commerce
platform does) and observe effects by polling the database with plain SQL.

Services: PostgreSQL database ``dust_e2e`` (created if missing, schema reset and migrated
with ``dust db upgrade`` at session start) and Redis database 14 (flushed at session
start). Override with ``DUST_E2E_DATABASE_URL`` / ``DUST_E2E_BROKER_URL``. When either
server is unreachable the tests are skipped, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import Engine, create_engine

from .support import (
    BROKER_URL,
    DATABASE_URL,
    Cluster,
    Dust,
    bare_client,
    prepare_database,
    unreachable,
)

_CLUSTER: Cluster | None = None


@pytest.fixture(scope="session")
def services() -> None:
    """PostgreSQL and Redis answer; the e2e database is fresh and migrated; Redis db empty."""
    problem = unreachable()
    if problem:
        message = f"e2e services unavailable: {problem}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    redis.Redis.from_url(BROKER_URL).flushdb()
    prepare_database()


@pytest.fixture(scope="session")
def cluster(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two worker processes for the whole session, stopped at the end whatever happened."""
    global _CLUSTER
    _CLUSTER = Cluster(tmp_path_factory.mktemp("worker-logs"))
    try:
        _CLUSTER.ensure_running()
        yield _CLUSTER
    finally:
        _CLUSTER.stop()


@pytest.fixture
def workers(cluster: Cluster) -> Cluster:
    """Both workers up (a test before may have killed one)."""
    cluster.ensure_running()
    return cluster


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed e2e test shows the workers' logs."""
    report = yield
    if report.failed and _CLUSTER is not None and "cluster" in getattr(item, "fixturenames", ()):
        report.sections.append(("worker logs", _CLUSTER.logs()))
    return report


@pytest.fixture(scope="session")
def engine(services: None) -> Iterator[Engine]:
    engine = create_engine(DATABASE_URL, pool_size=2)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def client(services: None) -> Iterator[Celery]:
    app = bare_client()
    yield app
    app.close()


@pytest.fixture
def dust(workers: Cluster, client: Celery, engine: Engine) -> Dust:
    return Dust(client, engine)


@pytest.fixture
def uid() -> str:
    """A prefix that keeps this test's ids apart from every other test's."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def envelope(uid: str) -> Callable[..., dict[str, Any]]:
    """``envelope(name, data, id=None)``: an envelope with an id unique to the test."""
    counter = iter(range(1, 1_000_000))

    def make(name: str, data: dict[str, Any], id: str | None = None) -> dict[str, Any]:
        return {
            "id": id or f"evt_{uid}_{next(counter)}",
            "name": name,
            "occurred_at": "2026-11-20T10:00:00Z",
            "data": data,
        }

    return make
