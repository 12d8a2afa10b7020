"""worker/redis_transport.py without a broker: what happens when the connection is gone."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from dust.worker.redis_transport import QoS


def test_restore_after_the_transport_is_detached_leaves_messages_to_the_sweep() -> None:
    # Celery's reaction to a lost broker: the transport is detached (client None), then the
    # channel closed; kombu's restore raised AttributeError there and stopped the worker.
    qos = QoS.__new__(QoS)
    qos.channel = SimpleNamespace(connection=SimpleNamespace(client=None))
    qos._delivered = {"tag-1": object(), "tag-2": object()}

    qos.restore_unacked()  # must not raise

    assert qos._delivered == {}  # still recorded in Redis's unacked hash, for the sweep


class FakeEntry:
    def __init__(self, delay: float, fun: Any) -> None:
        self.delay, self.fun, self.canceled = delay, fun, False

    def cancel(self) -> None:
        self.canceled = True


class FakeLoop:
    def __init__(self) -> None:
        self.entries: list[FakeEntry] = []

    def call_later(self, delay: float, fun: Any) -> FakeEntry:
        self.entries.append(FakeEntry(delay, fun))
        return self.entries[-1]

    def live(self) -> list[FakeEntry]:
        return [e for e in self.entries if not e.canceled]


def idle_channel(loop: FakeLoop | None) -> Any:
    from dust.worker.redis_transport import Channel

    channel = Channel.__new__(Channel)
    channel.connection = SimpleNamespace(cycle=SimpleNamespace(loop=loop))
    channel.fetch_interval = 0.01
    return channel


def test_empty_fetches_keep_one_wake_up_timer_at_a_time() -> None:
    """At startup the worker fetches in a drain_events loop before its event loop runs;
    a timer per empty fetch piled up there, and kombu's hub, finding more than 10 due at
    once, slept its idle second: the first event after a start waited 1 s."""
    loop = FakeLoop()
    channel = idle_channel(loop)
    for _ in range(100):
        channel._empty_at = None  # the pause is over: the next fetch is empty again
        channel._found_nothing()
    assert len(loop.live()) == 1
    assert loop.live()[0].delay <= channel.fetch_interval

    fired = loop.live()[0]
    loop.entries.remove(fired)
    fired.fun()  # it fired: the next pause gets a timer again
    channel._empty_at = None
    channel._found_nothing()
    assert len(loop.live()) == 1 and loop.entries[-1] is loop.live()[0]


def test_a_pause_begun_before_there_was_an_event_loop_still_wakes_it() -> None:
    channel = idle_channel(None)
    channel._found_nothing()  # no loop: no timer
    assert channel.backing_off()

    loop = FakeLoop()
    channel.connection.cycle.loop = loop
    channel._brpop_start()  # the loop's first turn asks for a fetch inside the pause
    channel._brpop_start()
    assert len(loop.live()) == 1 and 0 <= loop.live()[0].delay <= 0.001
