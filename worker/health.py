"""Is this Dust deployment able to work? The checks of ``dust health`` and of a worker's start.

Each check returns a :class:`Check`: its name, whether it holds, and one line saying what
was found. ``database`` (a connection and ``SELECT 1``), ``schema`` (the database at the
migrations' head), ``broker`` (a connection to it), ``workers`` (every worker of the
broker answers Celery's ping).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dust.worker.settings import Settings

#: Seconds a check waits for a server before it counts as down.
TIMEOUT = 3.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _problem(exc: BaseException) -> str:
    from dust.tasks.inbox import safe_message

    return f"{type(exc).__name__}: {safe_message(exc)}"


def safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # a broker URL SQLAlchemy cannot parse: scrub it by hand
        from dust.tasks.inbox import scrub

        return scrub(url)


def database(settings: Settings) -> Check:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = settings.database
    args: dict[str, Any] = {}
    if make_url(url).get_backend_name() == "postgresql":
        args["connect_timeout"] = int(TIMEOUT)
    engine = create_engine(url, connect_args=args, poolclass=_null_pool())
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        return Check("database", False, f"cannot reach {safe_url(url)} ({_problem(exc)})")
    finally:
        engine.dispose()
    return Check("database", True, safe_url(url))


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool


def schema(settings: Settings) -> Check:
    from dust.models.schema import current, heads

    try:
        at, expected = current(settings.database), heads()
    except Exception as exc:
        return Check("schema", False, f"cannot read the schema version ({_problem(exc)})")
    if not at:
        return Check("schema", False, "no Dust schema in the database: run `dust db upgrade`")
    if at != expected:
        return Check(
            "schema",
            False,
            f"at {', '.join(sorted(at))}, code expects {', '.join(sorted(expected))}:"
            " run `dust db upgrade`",
        )
    return Check("schema", True, f"at head {', '.join(sorted(at))}")


def broker(app: Any) -> Check:
    url = app.conf.broker_url
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=0, timeout=TIMEOUT)
    except Exception as exc:
        return Check("broker", False, f"cannot reach {safe_url(url)} ({_problem(exc)})")
    return Check("broker", True, safe_url(url))


def workers(app: Any, timeout: float = TIMEOUT) -> Check:
    """Pings every worker (a broadcast); holds when at least one answers within
    ``timeout`` and, between them, the workers that answered consume every queue of the
    app (``dust.events``, ``dust.requests``, ``dust.jobs``: one worker for all, or one each)."""
    try:
        replies = app.control.ping(timeout=timeout) or []
    except Exception as exc:
        return Check("workers", False, f"cannot ping workers ({_problem(exc)})")
    names = sorted(name for reply in replies for name in reply)
    if not names:
        return Check("workers", False, f"no worker answered a ping within {timeout:g} s")
    answering = f"{len(names)} answering: {', '.join(names)}"
    try:
        inspect = app.control.inspect(destination=names, timeout=timeout, limit=len(names))
        active = inspect.active_queues() or {}
    except Exception as exc:
        return Check("workers", False, f"{answering}; cannot list their queues ({_problem(exc)})")
    consumed = {queue["name"] for queues in active.values() for queue in queues or []}
    missing = [queue.name for queue in app.conf.task_queues if queue.name not in consumed]
    if missing:
        return Check("workers", False, f"{answering}; no worker consumes {', '.join(missing)}")
    return Check("workers", True, answering)


def run_all(settings: Settings, app: Any, timeout: float = TIMEOUT) -> list[Check]:
    """All four checks; the schema and the workers only when what they need is reachable."""
    checks = [database(settings)]
    if checks[0].ok:
        checks.append(schema(settings))
    else:
        checks.append(Check("schema", False, "not checked: the database is out of reach"))
    checks.append(broker(app))
    if checks[-1].ok:
        checks.append(workers(app, timeout))
    else:
        checks.append(Check("workers", False, "not checked: the broker is out of reach"))
    return checks
