"""The Celery app: one module, every option next to its reason.

Start the workers and the scheduler the way the Procfile does (``dust.worker.procfile``)::

    celery -A dust.worker.app worker --queues dust.events,dust.jobs --hostname events@%h
    celery -A dust.worker.app worker --queues dust.requests --concurrency 2 \
        --prefetch-multiplier 1 --hostname requests@%h
    celery -A dust.worker.app beat

Requests run in a worker of their own: in the events worker they waited for a pool process
to finish a batch of events (BENCHMARKS.md, "Checkout beside a backlog").
"""

from __future__ import annotations

import gc
import logging
import threading
from typing import Any

from celery import Celery
from celery.signals import (
    celeryd_after_setup,
    celeryd_init,
    setup_logging,
    worker_init,
    worker_process_init,
    worker_ready,
)
from kombu import Exchange, Queue

from dust.worker import filebroker  # noqa: F401  (atomic writes for the embedded broker)
from dust.worker.beat import JOBS, JOBS_QUEUE, build_schedule
from dust.worker.db import dispose_engines, get_engine
from dust.worker.settings import ConfigError, Settings, get_settings

log = logging.getLogger(__name__)

EVENTS_QUEUE = "dust.events"
REQUESTS_QUEUE = "dust.requests"


def broker_options(settings: Settings) -> dict[str, Any]:
    if settings.uses_embedded_broker:
        folder = settings.embedded_dir / "broker"
        (folder / "control").mkdir(parents=True, exist_ok=True)
        (settings.embedded_dir / "results").mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "control_folder": str(folder / "control"),
            # The file broker is polled; the default 1 s would dominate a demo's latency.
            "polling_interval": 0.05,
        }
    # After a crash, Redis hands an unacknowledged message out again after this long.
    visibility = settings.visibility_timeout_seconds
    return {
        "visibility_timeout": visibility,
        # ... but only when a live worker sweeps for such messages. kombu sweeps every
        # 10 s and scans on every 10th sweep only: ~100 s on top of the timeout (a 10 s
        # timeout became ~110 s). Scan on every sweep, every tenth of the timeout (1-10 s).
        "unacked_restore_interval": max(1, min(10, visibility // 10)),
        "unacked_restore_throttle": 1,
        # The sweep holds a lock in Redis (kombu's default: for 300 s). A worker killed
        # while sweeping left it in place, and no message came back for those 5 minutes
        # (found by bench/faults.py). A sweep takes milliseconds, and two sweeps at once
        # are safe (each restore is a WATCH transaction), so the lock lives 2-30 s.
        "unacked_mutex_expire": max(2, min(30, visibility // 5)),
    }


def broker_transport(settings: Settings) -> str | None:
    if settings.broker.split("://", 1)[0] in ("redis", "rediss"):
        return "dust.worker.redis_transport:Transport"
    return None


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery(
        "dust",
        broker=settings.broker,
        backend=settings.backend,
        # Redis brokers: kombu's transport with an atomic fetch. Stock kombu pops a
        # message (BRPOP) and records it as unacknowledged in a second round trip, so a
        # worker killed in between loses it for good (kombu#305); worker/redis_transport.py
        # pops and records it in one Lua script, so it is always queued or redeliverable.
        broker_transport=broker_transport(settings),
        include=[
            "dust.tasks.events",
            "dust.tasks.requests",
            "dust.tasks.jobs",
            "dust.tasks.admin",
            "dust.tasks.resolutions",
            "dust.tasks.noop",
        ],
    )
    visibility = settings.visibility_timeout_seconds
    app.conf.update(
        # JSON only: a pickle message is refused before anything is deserialized.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # Ack after the task ran, and put the message back if the process running it
        # dies (kill -9, OOM): at-least-once delivery, made exactly-once by the inbox.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # A task must finish far inside the visibility timeout, or Redis would deliver it
        # to a second worker while the first is still running it.
        task_soft_time_limit=max(5, visibility // 4),
        task_time_limit=max(10, visibility // 2),
        broker_transport_options=broker_options(settings),
        # Events are applied in batches of up to DUST_EVENT_BATCH_SIZE per pool process
        # (worker/batching.py), acked after their commit: room for one batch running and
        # one filling per process. What a crash hands back for redelivery is bounded by it.
        worker_prefetch_multiplier=max(4, 2 * settings.event_batch_size),
        # Each queue on its own direct exchange, so a checkout never lands behind events.
        task_queues=[
            Queue(EVENTS_QUEUE, Exchange(EVENTS_QUEUE), routing_key=EVENTS_QUEUE),
            Queue(REQUESTS_QUEUE, Exchange(REQUESTS_QUEUE), routing_key=REQUESTS_QUEUE),
            # Scheduled jobs (and their continuations) never queue behind events.
            Queue(JOBS_QUEUE, Exchange(JOBS_QUEUE), routing_key=JOBS_QUEUE),
        ],
        task_default_queue=EVENTS_QUEUE,
        task_routes={
            "dust.handle_event": {"queue": EVENTS_QUEUE},
            # bench/e2e.py's no-op ceiling: same queue as the events it is compared with.
            "dust.noop": {"queue": EVENTS_QUEUE},
            "dust.reserve": {"queue": REQUESTS_QUEUE},
            "dust.release": {"queue": REQUESTS_QUEUE},
            "dust.balance": {"queue": REQUESTS_QUEUE},
            "dust.history": {"queue": REQUESTS_QUEUE},
            "dust.order_refunds": {"queue": REQUESTS_QUEUE},
            "dust.overview": {"queue": REQUESTS_QUEUE},
            # Admin one-off tasks: an operator waits for the reply, never behind events.
            "dust.admin.adjust": {"queue": REQUESTS_QUEUE},
            "dust.admin.claim": {"queue": REQUESTS_QUEUE},
            "dust.admin.set_product": {"queue": REQUESTS_QUEUE},
            "dust.admin.replay": {"queue": REQUESTS_QUEUE},
            "dust.admin.resolve": {"queue": REQUESTS_QUEUE},
            # A historical load is a backlog of events: it queues with them, so its
            # seconds-long batches never hold up a checkout on dust.requests.
            "dust.admin.backfill_batch": {"queue": EVENTS_QUEUE},
            # Scheduled jobs and their continuations (worker/beat.py).
            **{task: {"queue": JOBS_QUEUE} for task in JOBS.values()},
        },
        # The jobs, every DUST_SCHEDULE_<JOB>_SECONDS (worker/beat.py). Beat's own state
        # lives in ./.dust/celerybeat-schedule; the once-per-period guard is in the database.
        beat_schedule=build_schedule(settings),
        beat_scheduler="dust.worker.beat:Scheduler",
        beat_schedule_filename=str(settings.beat_schedule_file),
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        # On losing the broker connection, let running tasks finish (their ack is sent once
        # the connection is back, or the message is redelivered: the inbox makes a second
        # run a no-op). True terminated them and then *acknowledged* them as revoked once
        # Redis was back: the event was dropped unapplied (found by bench/faults.py).
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        # A message with garbage headers is refused instead of stopping the worker; a body
        # that is not JSON is recorded rejected (worker/consumer.py).
        worker_consumer="dust.worker.consumer:DustConsumer",
        timezone="UTC",
        enable_utc=True,
    )
    if settings.signing:
        enable_signing(app, settings)
    return app


def enable_signing(app: Celery, settings: Settings) -> None:
    """Celery message signing: every task message is signed with this process's key and
    must carry a valid signature by a certificate in the store; unsigned (plain JSON) and
    forged messages are refused. The payload inside stays JSON; pickle stays disabled."""
    app.conf.update(
        task_serializer="auth",
        accept_content=["auth"],
        security_key=settings.signing_key_file,
        security_certificate=settings.signing_cert_file,
        security_cert_store=settings.signing_cert_store,
        security_digest="sha256",
    )
    app.setup_security(allowed_serializers=["json"], serializer="json")


@worker_process_init.connect
def _fresh_connections_after_fork(**_: Any) -> None:
    # A forked pool child must not share the parent's database sockets.
    dispose_engines()
    _freeze_startup_objects()
    threading.Thread(target=_connect_ahead, name="dust-connect-ahead", daemon=True).start()


def _connect_ahead() -> None:
    """Open the pool process's first database connection before its first task needs it:
    after a restart the first checkout otherwise paid for the connection (and its
    session settings) itself. In a thread, so that a database out of reach never holds up
    the process's start; its first task then waits and retries as ever."""
    try:
        with get_engine().connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except Exception as exc:
        log.debug("no database connection ahead of the first task: %s", type(exc).__name__)


@worker_init.connect
def _check_before_start(**_: Any) -> None:
    """A worker that cannot reach its database, or finds its schema behind, stops at
    start with one line, instead of saying "ready" and requeueing every event."""
    from dust.worker import health

    settings = get_settings()
    for check in (health.database, health.schema):
        found = check(settings)
        if not found.ok:
            raise ConfigError(f"dust: worker not started: {found.name}: {found.detail}")


@worker_ready.connect
def _main_process_ready(**_: Any) -> None:
    _freeze_startup_objects()
    port = get_settings().metrics_port
    if port:
        from dust.worker import metrics

        metrics.serve(app, port)


def _setup_json_logging(loglevel: Any = None, **_: Any) -> None:
    """DUST_LOG_FORMAT=json: connected, this signal replaces Celery's logging setup."""
    from dust.worker.logs import configure_json

    configure_json(loglevel or "INFO")


def _no_banner(instance: Any = None, **_: Any) -> None:
    """DUST_LOG_FORMAT=json: no startup banner, so that every line is a JSON object."""
    if instance is not None:
        instance.quiet = True


def _freeze_startup_objects() -> None:
    """Keep what startup built (modules, mappers, Celery's app) out of the garbage
    collector's full collections: each of them walked every object, every few seconds
    under load in the main process and in each pool child, a pause that every event in
    flight waited out (the half-load latency tail; figures in BENCHMARKS.md). Objects made
    afterwards are collected as before."""
    gc.collect()
    gc.freeze()


app = create_app()

if get_settings().log_format == "json":
    setup_logging.connect(_setup_json_logging, weak=False)
    celeryd_after_setup.connect(_no_banner, weak=False)
    # The earliest worker signal: warnings Celery gives before it sets up logging (its
    # "running as root" check) come out as JSON lines too.
    celeryd_init.connect(_setup_json_logging, weak=False)
if get_settings().metrics_port:
    from dust.worker import metrics as _metrics

    _metrics.connect_signals()
