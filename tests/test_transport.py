"""worker/redis_transport.py without a broker: what happens when the connection is gone."""

from __future__ import annotations

from types import SimpleNamespace

from worker.redis_transport import QoS


def test_restore_after_the_transport_is_detached_leaves_messages_to_the_sweep() -> None:
    # Celery's reaction to a lost broker: the transport is detached (client None), then the
    # channel closed; kombu's restore raised AttributeError there and stopped the worker.
    qos = QoS.__new__(QoS)
    qos.channel = SimpleNamespace(connection=SimpleNamespace(client=None))
    qos._delivered = {"tag-1": object(), "tag-2": object()}

    qos.restore_unacked()  # must not raise

    assert qos._delivered == {}  # still recorded in Redis's unacked hash, for the sweep
