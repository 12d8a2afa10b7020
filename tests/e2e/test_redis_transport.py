"""The Redis transport's fetch (worker/redis_transport.py): no message lost to a kill -9.

Stock kombu pops a message with BRPOP and records it as unacknowledged in a second round
trip; a consumer killed in between loses it (kombu#305). The crash is injected at exactly
that instant: the consumer process SIGKILLs itself as the fetched message is handed to
kombu, before kombu's QoS records it. With Dust's transport the messages that fetch took
are already in ``unacked`` and kombu's own ``restore_visible`` puts them back. (Run with stock kombu,
``transport="redis"``, the same test loses the message: the queue and ``unacked`` are
both empty after the kill.)
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue

from .support import BROKER_URL, ROOT

pytestmark = [pytest.mark.services]

TRANSPORT = "dust.worker.redis_transport:Transport"

CONSUMER = r"""
import os, signal, sys
from kombu import Connection, Exchange, Queue
from kombu.transport.virtual import base

url, transport, name = sys.argv[1:4]
options = {"unacked_key": name + ".unacked", "unacked_index_key": name + ".unacked_index",
           "unacked_mutex_key": name + ".unacked_mutex"}

def crash(self, message, queue):
    # The message has left its queue; kombu has not recorded it as unacknowledged yet.
    os.kill(os.getpid(), signal.SIGKILL)

base.Transport._deliver = crash
with Connection(url, transport=transport, transport_options=options) as conn:
    queue = Queue(name, Exchange(name), routing_key=name)
    with conn.Consumer(queue, callbacks=[lambda body, message: None], accept=["json"]):
        conn.drain_events(timeout=10)
sys.exit(3)  # never reached: the first fetched message kills the process
"""


def options(name: str, **more: object) -> dict[str, object]:
    return {
        "unacked_key": f"{name}.unacked",
        "unacked_index_key": f"{name}.unacked_index",
        "unacked_mutex_key": f"{name}.unacked_mutex",
        **more,
    }


@pytest.fixture
def broker(services: None):
    r = redis.Redis.from_url(BROKER_URL)
    try:
        r.ping()
    except redis.RedisError as exc:  # pragma: no cover
        pytest.skip(f"Redis unavailable: {exc}")
    return r


def test_kill_between_fetch_and_record_loses_nothing(broker):
    name = f"dust.transport_test.{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name), routing_key=name)
    with Connection(BROKER_URL, transport=TRANSPORT, transport_options=options(name)) as conn:
        producer = conn.Producer(serializer="json")
        for n in range(3):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key=name, declare=[queue])
    try:
        done = subprocess.run(
            [sys.executable, "-c", CONSUMER, BROKER_URL, TRANSPORT, name],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == -9, done.stderr
        # One fetch took all three: each recorded as delivered and unacknowledged, in
        # kombu's own QoS.append format ([raw message, exchange, routing key]).
        assert broker.llen(name) == 0
        unacked = broker.hgetall(f"{name}.unacked")
        assert len(unacked) == 3
        bodies = []
        for tag, value in unacked.items():
            payload, exchange, routing_key = json.loads(value)
            assert payload["properties"]["delivery_tag"] == tag.decode()
            assert payload["properties"]["body_encoding"] == "base64"
            bodies.append(json.loads(base64.b64decode(payload["body"]))["n"])
            assert (exchange, routing_key) == (name, name)
            assert broker.zscore(f"{name}.unacked_index", tag) is not None
        assert sorted(bodies) == [0, 1, 2]

        # kombu's restore (what a live worker's sweep does after the visibility timeout)
        # puts them back; a consumer then gets all three.
        time.sleep(1.1)
        opts = options(name, visibility_timeout=1)
        with Connection(BROKER_URL, transport=TRANSPORT, transport_options=opts) as conn:
            conn.default_channel.qos.restore_visible(num=10, interval=1)
            assert broker.llen(name) == 3 and broker.hlen(f"{name}.unacked") == 0
            got = []
            with conn.Consumer(
                queue,
                callbacks=[lambda body, message: (got.append(body["n"]), message.ack())],
                accept=["json"],
            ):
                deadline = time.monotonic() + 10
                while len(got) < 3 and time.monotonic() < deadline:
                    try:
                        conn.drain_events(timeout=1)
                    except TimeoutError:
                        pass
        assert sorted(got) == [0, 1, 2]
        assert broker.llen(name) == 0 and broker.hlen(f"{name}.unacked") == 0
    finally:
        broker.delete(name, f"{name}.unacked", f"{name}.unacked_index", f"_kombu.binding.{name}")


@pytest.mark.parametrize(("visibility", "lock"), [(10, 2), (60, 12), (300, 30), (86400, 30)])
def test_sweep_lock_is_short_lived_and_redis_urls_get_the_transport(visibility, lock):
    """kombu holds its restore sweep's lock in Redis for 300 s by default: a worker killed
    mid-sweep held back every redelivery that long (found by bench/faults.py)."""
    from dust.worker.app import broker_options, broker_transport
    from dust.worker.settings import Settings

    settings = Settings(
        broker_url="redis://127.0.0.1:6379/0", visibility_timeout_seconds=visibility
    )
    assert broker_options(settings)["unacked_mutex_expire"] == lock
    assert broker_transport(settings) == TRANSPORT
    assert broker_transport(Settings()) is None  # the embedded file broker keeps its own


def _drain(conn: Connection, got: list[Any], want: int) -> None:
    deadline = time.monotonic() + 10
    while len(got) < want and time.monotonic() < deadline:
        try:
            conn.drain_events(timeout=1)
        except TimeoutError:
            pass


def test_a_fetch_takes_what_the_prefetch_limit_allows_and_acks_go_together(broker):
    name = f"dust.transport_test.{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name), routing_key=name)
    try:
        with Connection(BROKER_URL, transport=TRANSPORT, transport_options=options(name)) as conn:
            producer = conn.Producer(serializer="json")
            for n in range(5):
                producer.publish(
                    {"n": n}, exchange=queue.exchange, routing_key=name, declare=[queue]
                )
            got: list[Any] = []
            with conn.Consumer(
                queue, callbacks=[lambda body, message: got.append(message)], accept=["json"]
            ) as consumer:
                consumer.qos(prefetch_count=2)
                _drain(conn, got, 2)
                # One fetch, two messages: the limit's worth, oldest first; three still queued.
                assert [m.decode()["n"] for m in got] == [0, 1]
                assert broker.llen(name) == 3 and broker.hlen(f"{name}.unacked") == 2
                qos = conn.default_channel.qos
                with qos.acks_together():
                    for message in got:
                        message.ack()
                    assert broker.hlen(f"{name}.unacked") == 2  # not sent yet
                assert broker.hlen(f"{name}.unacked") == 0
                assert broker.zcard(f"{name}.unacked_index") == 0
                _drain(conn, got, 4)  # room for two again
                assert [m.decode()["n"] for m in got] == [0, 1, 2, 3]
                assert broker.llen(name) == 1 and broker.hlen(f"{name}.unacked") == 2
    finally:
        broker.delete(name, f"{name}.unacked", f"{name}.unacked_index", f"_kombu.binding.{name}")


def test_a_redis_that_forgot_the_script_still_gets_fetched_from(broker):
    """After a Redis restart its script cache is empty: EVALSHA fails with NOSCRIPT (and
    runs nothing); the next fetch sends the script whole."""
    name = f"dust.transport_test.{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name), routing_key=name)
    try:
        with Connection(BROKER_URL, transport=TRANSPORT, transport_options=options(name)) as conn:
            producer = conn.Producer(serializer="json")
            got: list[Any] = []
            with conn.Consumer(
                queue,
                callbacks=[lambda body, message: (got.append(body["n"]), message.ack())],
                accept=["json"],
            ):
                producer.publish({"n": 0}, exchange=queue.exchange, routing_key=name)
                _drain(conn, got, 1)
                assert conn.default_channel._script_cached
                broker.script_flush()
                producer.publish({"n": 1}, exchange=queue.exchange, routing_key=name)
                _drain(conn, got, 2)
        assert got == [0, 1]
        assert broker.llen(name) == 0 and broker.hlen(f"{name}.unacked") == 0
    finally:
        broker.delete(name, f"{name}.unacked", f"{name}.unacked_index", f"_kombu.binding.{name}")
