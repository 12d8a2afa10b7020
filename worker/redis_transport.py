"""kombu's Redis transport, with a fetch that cannot lose a message when the worker dies.

Stock kombu takes a message off its queue with BRPOP and records it as delivered but
unacknowledged (``unacked`` hash + ``unacked_index`` sorted set) in a second round trip.
A worker main process killed between the two (kill -9, OOM, power loss) loses that
message for good: it is in no queue and in no unacked record that could bring it back
(kombu#305, celery#7950).

Here a single Lua script (atomic in Redis) pops the oldest messages of the queues, as
many as the prefetch limit leaves room for (at most ``FETCH_MOST``), *and* records each in
``unacked`` / ``unacked_index`` with exactly the value kombu's own ``QoS.append`` writes
(``[payload, exchange, routing_key]`` as JSON, keyed by the delivery tag assigned at
publish, scored by the time of delivery). kombu's ``restore_visible`` / ``restore_by_tag``
/ ack / reject work on it unchanged. A message is therefore either still in its queue or
recorded as unacknowledged, at every instant. The script is sent whole once, then by its
SHA1 (``EVALSHA``; sent whole again after a Redis restart empties Redis's script cache).
``QoS.acks_together`` lets the worker's batches (``worker/batching.py``) acknowledge many
messages in one round trip.

A script cannot block, so an empty fetch backs off before the next one: 1 ms after the
first empty fetch, doubling with each empty fetch in a row up to ``fetch_interval`` (10 ms,
transport option), back to 1 ms once a message comes. An idle worker asks Redis 100 times
a second (a few microseconds of Redis each); a busy one at once, as BRPOP did; an event
reaching an idle worker waits at most 10 ms to be fetched. A longer interval would make
the first events after a pause wait it out, and the burst gathered behind them with them.
Selected in ``worker/app.py`` (``broker_transport``) for ``redis://`` and ``rediss://``
broker URLs; publishing is kombu's own, unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from time import monotonic, time
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps, loads
from kombu.utils.objects import cached_property
from redis.exceptions import NoScriptError

from dust.worker import dead_letters

try:  # kombu >= 5.3
    from kombu.utils.encoding import bytes_to_str
except ImportError:  # pragma: no cover
    bytes_to_str = kombu_redis.bytes_to_str

Empty = kombu_redis.Empty
log = logging.getLogger(__name__)

#: KEYS[1] unacked hash, KEYS[2] unacked_index sorted set, KEYS[3] the dead letters'
#: records, KEYS[4] their items, KEYS[5] their count (worker/dead_letters.py), KEYS[6..] the
#: queues in the order BRPOP would try them; ARGV[1] the delivery time (client clock, as
#: kombu's), ARGV[2] the most messages to take, ARGV[3] the time as ISO 8601 text.
#: Returns ``{{queue, message, recorded, ...}, {dead id, queue, reason, ...}}``, messages
#: oldest first, or false. Each message is parsed *before* it is popped: a script error
#: after a write is not rolled back. An item that is JSON but not a kombu message (not an
#: object, no properties.delivery_tag and delivery_info) is moved to the dead letters as
#: it was, with the reason, in the same atomic step as its pop: it cannot stop the worker,
#: come back after the visibility timeout, or be lost. An item Redis's JSON parser refuses
#: (not JSON, or JSON it does not take, such as an escaped lone surrogate, which Python's
#: does) is returned unrecorded (``recorded`` 0) for the worker to judge (``_taken``).
FETCH_SCRIPT = """
local found = {}
local dead = {}
local most = tonumber(ARGV[2])
for i = 6, #KEYS do
  while #found < 3 * most do
    local item = redis.call('LINDEX', KEYS[i], -1)
    if not item then break end
    local ok, payload = pcall(cjson.decode, item)
    local tag, info, why
    if ok then
      if type(payload) ~= 'table' or type(payload['properties']) ~= 'table' then
        why = 'not a kombu message: not an object with properties'
      else
        tag = payload['properties']['delivery_tag']
        info = payload['properties']['delivery_info']
        if type(tag) ~= 'string' or type(info) ~= 'table' then
          why = 'not a kombu message: no properties.delivery_tag and delivery_info'
        end
      end
    end
    redis.call('RPOP', KEYS[i])
    if why then
      local id = 'dl-' .. redis.call('INCR', KEYS[5])
      redis.call('HSET', KEYS[3], id, cjson.encode({id = id, list = KEYS[i], reason = why,
        at = ARGV[3], size = string.len(item)}))
      redis.call('HSET', KEYS[4], id, item)
      dead[#dead + 1] = id
      dead[#dead + 1] = KEYS[i]
      dead[#dead + 1] = why
    else
      local recorded = 0
      if ok then
        local ex = info['exchange']
        local rk = info['routing_key']
        if type(ex) ~= 'string' then ex = '' end
        if type(rk) ~= 'string' then rk = '' end
        redis.call('ZADD', KEYS[2], ARGV[1], tag)
        redis.call('HSET', KEYS[1], tag,
          '[' .. item .. ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']')
        recorded = 1
      end
      found[#found + 1] = KEYS[i]
      found[#found + 1] = item
      found[#found + 1] = recorded
    end
  end
end
if #found == 0 and #dead == 0 then return false end
return {found, dead}
"""
FETCH_SHA = hashlib.sha1(FETCH_SCRIPT.encode()).hexdigest()

#: Most messages one fetch takes (fewer when the prefetch limit leaves less room).
FETCH_MOST = 100
#: Longest pause between two fetches while every queue is empty (seconds).
DEFAULT_FETCH_INTERVAL = 0.01
#: First pause after an empty fetch; doubled with each empty fetch in a row.
FIRST_BACKOFF = 0.001


class QoS(kombu_redis.QoS):
    _acks: list[str] | None = None

    def ack(self, delivery_tag: str) -> None:
        if self._acks is None:
            super().ack(delivery_tag)
            return
        self._acks.append(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    @contextmanager
    def acks_together(self) -> Iterator[None]:
        """Acks inside the block leave for Redis together, in one round trip at its end.
        Should that round trip fail, the messages stay recorded as unacknowledged and the
        visibility sweep hands them out again (a redelivery, a duplicate for the inbox)."""
        self._acks = tags = []
        try:
            yield
        finally:
            self._acks = None
            if tags:
                with self.channel.conn_or_acquire() as client:
                    pipe = client.pipeline()
                    pipe.zrem(self.unacked_index_key, *tags)
                    pipe.hdel(self.unacked_key, *tags)
                    pipe.execute()

    def append(self, message: Any, delivery_tag: Any) -> None:
        # The fetch script has already recorded the message in unacked / unacked_index;
        # only the in-process bookkeeping (prefetch credit, restore at shutdown) is left.
        virtual.QoS.append(self, message, delivery_tag)

    def restore_unacked(self, client: Any = None) -> None:
        # After a lost broker connection Celery detaches the transport (collect()) and only
        # then closes the channel, whose restore of delivered messages then failed with an
        # AttributeError (no connection parameters left) that stopped the worker
        # ("Unrecoverable error"; found by bench/faults.py with batches in flight). Those
        # messages are still recorded in Redis as unacknowledged: the visibility sweep of
        # any worker hands them out again, so here they are left to it.
        if client is None and self.channel.connection.client is None:
            log.warning(
                "broker connection gone: %d delivered messages left to the visibility sweep",
                len(self._delivered),
            )
            self._delivered.clear()
            return
        super().restore_unacked(client)


class Channel(kombu_redis.Channel):
    QoS = QoS
    fetch_interval = DEFAULT_FETCH_INTERVAL
    _empty_at: float | None = None
    _backoff: float = 0.0
    #: The event loop's wake-up timer for the end of the pause, and when it fires.
    _wake: Any = None
    _wake_at: float = 0.0
    #: Whether Redis is known to hold the fetch script (else it is sent whole, once).
    _script_cached = False

    from_transport_options = kombu_redis.Channel.from_transport_options + ("fetch_interval",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise ChannelError("dust.worker.redis_transport does not support global_keyprefix")
        if not self.ack_emulation:
            raise ChannelError("dust.worker.redis_transport needs ack_emulation")

    @cached_property
    def _fetch_script(self) -> str:
        return FETCH_SCRIPT

    def _fetch_keys(self, queues: list[str]) -> list[str]:
        dead = [dead_letters.KEY, dead_letters.ITEMS_KEY, dead_letters.COUNT_KEY]
        return [self.unacked_key, self.unacked_index_key, *dead] + [
            self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues
        ]

    def backing_off(self) -> bool:
        return self._empty_at is not None and monotonic() - self._empty_at < self._backoff

    def _found_nothing(self) -> None:
        self._empty_at = monotonic()
        self._backoff = min(self.fetch_interval, max(FIRST_BACKOFF, self._backoff * 2))
        self._wake_after_pause()

    def _wake_after_pause(self) -> None:
        """Have the event loop wake when the pause is over, with one timer at a time. Every
        empty fetch setting a timer of its own piled them up before the loop ran (during
        the startup's drain_events); kombu's hub fires at most 10 due timers per turn and
        then sleeps its idle second, so the first event after a start waited 1 s."""
        loop = getattr(self.connection.cycle, "loop", None)
        if loop is None or self._empty_at is None:
            return
        end = self._empty_at + self._backoff
        if self._wake is not None:
            if not self._wake.canceled and self._wake_at >= end:
                return  # the pending timer fires at or after the end: it will do
            self._wake.cancel()
        self._wake_at = end
        self._wake = loop.call_later(max(0.0, end - monotonic()), self._woken)

    def _woken(self) -> None:
        self._wake = None

    def _most(self) -> int:
        room = self.qos.can_consume_max_estimate()
        return FETCH_MOST if room is None else max(1, min(FETCH_MOST, room))

    # The event loop's fetch: sent by the poller in place of BRPOP, read when readable.
    def _brpop_start(self, timeout: Any = None) -> None:
        if self.backing_off():
            self._wake_after_pause()  # a timer wakes the loop when the pause is over
            return
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        keys = self._fetch_keys(queues)
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        command, script = ("EVALSHA", FETCH_SHA) if self._script_cached else ("EVAL", FETCH_SCRIPT)
        self.client.connection.send_command(
            command, script, len(keys), *keys, time(), self._most(), dead_letters.now_iso()
        )

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                result = self.client.parse_response(self.client.connection, "EVAL", **options)
            except NoScriptError:  # Redis restarted (its script cache is empty): nothing ran
                self._script_cached = False
                raise Empty() from None
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            self._script_cached = True
            if result:
                found, dead = result
                for at in range(0, len(dead), 3):
                    dead_letters.logged(*(bytes_to_str(value) for value in dead[at : at + 3]))
                if not found:
                    raise Empty()  # not a pause: more may be waiting behind what was buried
                self._empty_at = None
                self._backoff = 0.0
                self._queue_cycle.rotate(self._queue_of(found[-3]))
                for at in range(0, len(found), 3):
                    message = self._taken(found[at], found[at + 1], found[at + 2])
                    if message is not None:
                        self.connection._deliver(message, self._queue_of(found[at]))
                return True
            self._found_nothing()
            raise Empty()
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _taken(self, key: bytes, item: bytes, recorded: int) -> dict[str, Any] | None:
        """The fetched ``item`` as the message kombu delivers; None when it is none (not
        JSON, a body that does not decode, ...): then it is buried in the dead letters
        (its unacked record removed) and the messages fetched with it go on. A message the
        script could not parse but Python can is recorded as unacknowledged here, as the
        script does for the others (a worker killed just before loses it, as with BRPOP)."""
        try:
            message = loads(bytes_to_str(item))
            built = self.Message(message, channel=self)  # what delivery builds: must not raise
        except Exception as exc:
            reason = f"not a kombu message ({type(exc).__name__}: {str(exc)[:200]})"
        else:
            if not recorded:
                info = built.delivery_info or {}
                entry = dumps([message, info.get("exchange") or "", info.get("routing_key") or ""])
                with self.conn_or_acquire() as client:
                    pipe = client.pipeline()
                    pipe.zadd(self.unacked_index_key, {built.delivery_tag: time()})
                    pipe.hset(self.unacked_key, built.delivery_tag, entry)
                    pipe.execute()
            return dict(message)
        tag = _tag_of(item) if recorded else ""
        try:
            with self.conn_or_acquire() as client:
                unacked = (self.unacked_key, self.unacked_index_key)
                dead_letters.RedisDeadLetters(client, unacked).bury(
                    bytes_to_str(key), item, reason, tag=tag
                )
        except self.connection_errors:
            # still recorded as unacknowledged: the visibility sweep brings it back
            log.exception("could not dead-letter a message (%s)", reason)
        return None

    def _queue_of(self, key: bytes) -> str:
        return bytes_to_str(key).rsplit(self.sep, 1)[0]

    # basic_get's fetch (not used by the worker's loop, kept atomic all the same).
    def _get(self, queue: str) -> dict[str, Any]:
        keys = self._fetch_keys([queue])
        with self.conn_or_acquire() as client:
            result = client.eval(FETCH_SCRIPT, len(keys), *keys, time(), 1, dead_letters.now_iso())
            self._maybe_update_queues_expire(client, queue)
        found = result[0] if result else None
        message = self._taken(found[0], found[1], found[2]) if found else None
        if message is None:
            raise Empty()
        return message


class MultiChannelPoller(kombu_redis.MultiChannelPoller):
    def get(self, callback: Any, timeout: float | None = None) -> Any:
        # Without an event loop (drain_events): never wait past a back-off, or a loop with
        # no fetch in flight would wait for the whole timeout (or forever).
        cap = min((c.fetch_interval for c in self._channels), default=DEFAULT_FETCH_INTERVAL)
        return super().get(callback, timeout=cap if timeout is None else min(timeout, cap))


class Transport(kombu_redis.Transport):
    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cycle = MultiChannelPoller()

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)
        # Each empty fetch sets a timer on this loop for the end of its pause; the loop's
        # tick then sends the next fetch.
        self.cycle.loop = loop


#: The delivery tag in a message Python cannot decode (bytes that are not UTF-8, ...).
TAG = re.compile(rb'"delivery_tag"\s*:\s*"([^"\\]+)"')


def _tag_of(item: bytes) -> str:
    """The delivery tag the fetch script recorded ``item`` under (it decoded it as JSON)."""
    try:
        tag = loads(bytes_to_str(item))["properties"]["delivery_tag"]
    except Exception:
        found = TAG.search(item if isinstance(item, bytes) else str(item).encode())
        return found.group(1).decode("utf-8", "replace") if found else ""
    return tag if isinstance(tag, str) else ""


def _noop() -> None:
    return None
