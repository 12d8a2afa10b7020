"""The worker's main-process side of batching (``worker/batching.py``), with a fake pool:
when a batch leaves, what is acknowledged, what goes back on the queue, and which
messages are left to Celery's own per-message strategy. Real workers run it in tests/e2e."""

from __future__ import annotations

from typing import Any

import pytest

from dust.worker import batching


class FakeMessage:
    def __init__(self, n: int, **headers: Any) -> None:
        self.headers = {"id": f"task-{n}", "task": "dust.handle_event", **headers}
        self.payload: dict[str, Any] = {}
        self.body = [[{"id": f"evt-{n}"}], {}, {}]
        self.acked = False
        self.requeued = False

    def decode(self) -> Any:
        return self.body

    def ack_log_error(self, *_: Any) -> None:
        self.acked = True

    def reject_log_error(self, *_: Any, requeue: bool = False) -> None:
        self.requeued = requeue


class FakePool:
    num_processes = 2
    limit = 2

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []

    def apply_async(self, target: Any, args: Any, **options: Any) -> None:
        self.jobs.append({"target": target, "bodies": args[0], **options})


class FakeTimer:
    def __init__(self) -> None:
        self.calls: list[tuple[float, Any, Any]] = []

    def call_after(self, seconds: float, fun: Any, args: Any = ()) -> None:
        self.calls.append((seconds, fun, args))


class FakeConsumer:
    connection_errors = (ConnectionError,)

    def __init__(self) -> None:
        self.pool = FakePool()
        self.timer = FakeTimer()
        self.decode_errors: list[Any] = []

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self.decode_errors.append(message)


@pytest.fixture
def setup(monkeypatch: pytest.MonkeyPatch) -> Any:
    fallback_calls: list[Any] = []

    def fake_default(task: Any, app: Any, consumer: Any, **_: Any) -> Any:
        return lambda message, *rest, **kw: fallback_calls.append(message)

    monkeypatch.setattr(batching, "celery_strategy", fake_default)
    monkeypatch.setenv("DUST_EVENT_BATCH_SIZE", "3")
    from dust.worker.settings import get_settings

    get_settings.cache_clear()
    consumer = FakeConsumer()
    app = type(
        "App", (), {"conf": type("Conf", (), {"task_soft_time_limit": 5, "task_time_limit": 10})}
    )
    handler = batching.strategy(object(), app, consumer)
    yield handler, consumer, fallback_calls
    get_settings.cache_clear()


def receive(handler: Any, message: FakeMessage) -> None:
    handler(message, None, None, None, None)


def test_a_message_leaves_at_once_while_a_pool_process_is_free(setup: Any) -> None:
    handler, consumer, _ = setup
    first, second, third = FakeMessage(1), FakeMessage(2), FakeMessage(3)
    receive(handler, first)
    receive(handler, second)
    assert [job["bodies"] for job in consumer.pool.jobs] == [[first.body], [second.body]]

    receive(handler, third)  # both processes busy: it waits
    assert len(consumer.pool.jobs) == 2


def test_messages_that_wait_leave_together_when_a_batch_returns(setup: Any) -> None:
    handler, consumer, _ = setup
    messages = [FakeMessage(n) for n in range(7)]
    for message in messages:
        receive(handler, message)
    first = consumer.pool.jobs[0]
    assert len(consumer.pool.jobs) == 2 and len(first["bodies"]) == 1

    first["callback"](["processed"])  # the first batch committed
    assert messages[0].acked and not messages[1].acked
    # the five that waited: at most DUST_EVENT_BATCH_SIZE (3) leave as one batch
    assert consumer.pool.jobs[2]["bodies"] == [m.body for m in messages[2:5]]


def test_only_settled_messages_are_acked_the_rest_requeued_later(setup: Any) -> None:
    handler, consumer, _ = setup
    receive(handler, FakeMessage(0))
    receive(handler, FakeMessage(1))
    waiting = [FakeMessage(n) for n in (2, 3)]
    for message in waiting:
        receive(handler, message)
    consumer.pool.jobs[0]["callback"](["processed"])
    batch = consumer.pool.jobs[2]
    assert batch["bodies"] == [m.body for m in waiting]

    batch["callback"](["processed", None])
    assert waiting[0].acked
    assert not waiting[1].acked and not waiting[1].requeued
    ((seconds, requeue, args),) = consumer.timer.calls
    assert seconds == batching.REQUEUE_DELAY
    requeue(*args)
    assert waiting[1].requeued


def test_a_lost_pool_process_puts_its_whole_batch_back_at_once(setup: Any) -> None:
    handler, consumer, _ = setup
    message = FakeMessage(1)
    receive(handler, message)
    consumer.pool.jobs[0]["error_callback"](RuntimeError("worker lost"))
    assert message.requeued and not message.acked


def test_retries_etas_and_undecodable_bodies_are_not_batched(setup: Any) -> None:
    handler, consumer, fallback_calls = setup
    retry = FakeMessage(1, retries=1, eta="2026-11-21T10:00:00+00:00")
    later = FakeMessage(2, eta="2026-11-21T10:00:00+00:00")
    broken = FakeMessage(3)
    broken.decode = lambda: (_ for _ in ()).throw(ValueError("not JSON"))  # type: ignore[method-assign]
    for message in (retry, later, broken):
        receive(handler, message)

    assert fallback_calls == [retry, later]
    assert consumer.decode_errors == [broken]
    assert consumer.pool.jobs == []


def test_a_batch_is_acknowledged_in_one_broker_round_trip_where_the_transport_can(
    setup: Any,
) -> None:
    """worker/redis_transport.py's ``QoS.acks_together``: the acks of a batch are sent
    together when the block ends; the next batch has already left by then."""
    from contextlib import contextmanager

    handler, consumer, _ = setup
    sent: list[list[str]] = []

    class QoS:
        pending: list[str] | None = None

        @contextmanager
        def acks_together(self) -> Any:
            self.pending = []
            yield
            sent.append(self.pending)
            self.pending = None

    qos = QoS()
    channel = type("Channel", (), {"qos": qos})()
    messages = [FakeMessage(n) for n in range(6)]
    for message in messages:
        message.channel = channel  # type: ignore[attr-defined]
        message.ack_log_error = (  # type: ignore[method-assign]
            lambda *_, m=message: (
                qos.pending.append(m.headers["id"])
                if qos.pending is not None
                else pytest.fail("acked outside acks_together")
            )
        )
        receive(handler, message)
    jobs = consumer.pool.jobs
    jobs[0]["callback"](["processed"])
    jobs[1]["callback"](["processed"])
    assert len(jobs) == 4  # each return sent the next batch out
    jobs[2]["callback"](["processed", "processed", "processed"])

    assert sent == [["task-0"], ["task-1"], ["task-2", "task-3", "task-4"]]


def test_a_batch_the_pool_cannot_take_goes_one_by_one_and_the_culprit_is_buried(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body the pool cannot pickle is neither requeued (a hot loop) nor allowed to hold
    back the messages batched with it: they leave alone; it goes to the dead letters."""
    handler, consumer, _ = setup
    buried: list[tuple[Any, str]] = []
    monkeypatch.setattr(
        batching.dead_letters, "bury_message", lambda m, why: buried.append((m, why))
    )
    poison = FakeMessage(99)

    def apply_async(target: Any, args: Any, **options: Any) -> None:
        if poison.body in args[0]:
            raise RecursionError("maximum recursion depth exceeded while pickling an object")
        consumer.pool.jobs.append({"target": target, "bodies": args[0], **options})

    consumer.pool.apply_async = apply_async  # type: ignore[method-assign]
    consumer.pool.num_processes = consumer.pool.limit = 1
    receive(handler, FakeMessage(0))  # the one process is busy with it
    messages = [FakeMessage(1), poison, FakeMessage(2)]
    for message in messages:
        receive(handler, message)
    consumer.pool.jobs[0]["callback"]([True])  # 1, poison, 2 leave as one batch: refused
    sent = [job["bodies"] for job in consumer.pool.jobs[1:]]
    assert sent == [[messages[0].body], [messages[2].body]]
    assert [m for m, _ in buried] == [poison]
    assert "could not be handed to the pool (RecursionError" in buried[0][1]
    assert not any(m.requeued for m in messages)


def test_an_envelope_nested_too_deep_is_refused_before_it_is_batched(setup: Any) -> None:
    handler, consumer, _ = setup
    deep: Any = "x"
    for _ in range(500):
        deep = {"x": deep}
    message = FakeMessage(1)
    message.body = [[{"id": "evt-deep", "name": "order.placed", "data": deep}], {}, {}]
    receive(handler, message)
    (job,) = consumer.pool.jobs
    ((args, kwargs, embed),) = job["bodies"]
    (parsed,) = args
    assert parsed.event_id == "evt-deep"
    assert parsed.error == "envelope nested more than 32 levels deep"
    assert len(parsed.text) < 10_000  # flat: what the pool is handed pickles at any depth
