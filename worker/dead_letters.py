"""The dead-letter list: what arrived on a Dust queue and can never be a task.

An item that cannot be decoded, is not a kombu/Celery message, or cannot be handed to the
pool (too large, not serialisable) is moved here exactly as it was received, with the
reason and the time, instead of stopping the worker (an exception in the fetch loop), or
coming back after the visibility timeout to stop it again, or being retried in a hot loop.
The messages fetched beside it go on. Each burial is counted and logged once at ERROR.

Where it lives follows the broker:

- Redis: hash ``dust.dead_letters`` (id -> the record as JSON: id, list, reason, at, size),
  hash ``dust.dead_letters.items`` (id -> the item's bytes, untouched), counter
  ``dust.dead_letters.count`` (every burial ever), list ``dust.dead_letters.audit`` (what
  operators did: requeue and drop, with who, why and when; newest first, never trimmed).
  Items the fetch script itself refuses (not JSON, no ``properties``) are buried by the
  script, atomically with their pop: no crash can lose them (``worker/redis_transport.py``).
- The embedded file broker: the folder ``dead`` beside its messages
  (``.dust/broker/dead/``): ``<id>.json`` (the record), ``<id>.item`` (the bytes) and
  ``audit.jsonl`` (one JSON object per operator action).

``dust dead-letters list|requeue|drop`` (``worker/cli_dead_letters.py``) read and act on
it. Requeue puts the item back on its queue as it was; drop deletes it, keeping it in the
audit record with the actor and the reason.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("dust.dead_letters")

KEY = "dust.dead_letters"
ITEMS_KEY = "dust.dead_letters.items"
COUNT_KEY = "dust.dead_letters.count"
AUDIT_KEY = "dust.dead_letters.audit"
#: The folder of the file broker's dead letters, under its message folder.
FOLDER = "dead"
#: Largest message body handed to the pool (bytes). An envelope is at most 1 MB
#: (tasks/inbox.py MAX_ENVELOPE_BYTES); escapes and encodings can make its message a few
#: times larger, never this large.
MAX_MESSAGE_BYTES = 8_000_000

#: KEYS: records, items, count, unacked, unacked_index. ARGV: id, record (JSON), item,
#: delivery tag ('' when the message was never recorded as unacknowledged by the fetch,
#: or is acknowledged by the caller). A second burial of the same id changes nothing.
BURY_SCRIPT = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  redis.call('INCR', KEYS[3])
end
if ARGV[4] ~= '' then
  redis.call('HDEL', KEYS[4], ARGV[4])
  redis.call('ZREM', KEYS[5], ARGV[4])
end
return 1
"""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def as_bytes(item: Any) -> bytes:
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item)
    return str(item).encode("utf-8", "surrogatepass")


def logged(dead_id: str, queue: str, reason: str) -> None:
    log.error("dead-lettered %s from %s: %s", dead_id, queue, reason)


class NotFound(LookupError):
    """No dead letter with that id."""


class DeadLetters(Protocol):
    def bury(self, queue: str, item: Any, reason: str, *, tag: str = "") -> str: ...
    def list(self) -> list[dict[str, Any]]: ...
    def item(self, dead_id: str) -> bytes: ...
    def requeue(self, dead_id: str, actor: str) -> dict[str, Any]: ...
    def drop(self, dead_id: str, reason: str, actor: str) -> dict[str, Any]: ...
    def audit(self) -> list[dict[str, Any]]: ...
    def count(self) -> int: ...


class RedisDeadLetters:
    """The dead letters of a Redis broker (``client``: a redis-py client of its database)."""

    def __init__(self, client: Any, unacked_keys: tuple[str, str] = ("unacked", "unacked_index")):
        self.client = client
        self.unacked_keys = unacked_keys
        self._bury = client.register_script(BURY_SCRIPT)

    def bury(self, queue: str, item: Any, reason: str, *, tag: str = "") -> str:
        """Keep ``item`` (as received) with why; ``tag``: also drop its unacked record."""
        raw = as_bytes(item)
        dead_id = f"dl-{tag}" if tag else f"dl-{uuid.uuid4().hex}"
        record = {"id": dead_id, "list": queue, "reason": reason, "at": now_iso()}
        record["size"] = len(raw)
        keys = [KEY, ITEMS_KEY, COUNT_KEY, *self.unacked_keys]
        self._bury(keys=keys, args=[dead_id, json.dumps(record), raw, tag])
        logged(dead_id, queue, reason)
        return dead_id

    def list(self) -> list[dict[str, Any]]:
        records = [json.loads(value) for value in self.client.hvals(KEY)]
        return sorted(records, key=lambda record: (record["at"], record["id"]))

    def record(self, dead_id: str) -> dict[str, Any]:
        value = self.client.hget(KEY, dead_id)
        if value is None:
            raise NotFound(dead_id)
        return dict(json.loads(value))

    def item(self, dead_id: str) -> bytes:
        value = self.client.hget(ITEMS_KEY, dead_id)
        if value is None:
            raise NotFound(dead_id)
        return bytes(value)

    def requeue(self, dead_id: str, actor: str) -> dict[str, Any]:
        return self._settle(dead_id, "requeue", actor, None)

    def drop(self, dead_id: str, reason: str, actor: str) -> dict[str, Any]:
        return self._settle(dead_id, "drop", actor, reason)

    def _settle(self, dead_id: str, action: str, actor: str, why: str | None) -> dict[str, Any]:
        """Requeue or drop, as one transaction that fails when another operator settled
        the same dead letter meanwhile (WATCH)."""

        def settle(pipe: Any) -> dict[str, Any]:
            record, item = pipe.hget(KEY, dead_id), pipe.hget(ITEMS_KEY, dead_id)
            if record is None or item is None:
                raise NotFound(dead_id)
            entry = _audit_entry(json.loads(record), action, actor, why, item)
            pipe.multi()
            if action == "requeue":
                pipe.lpush(entry["list"], item)
            pipe.hdel(KEY, dead_id)
            pipe.hdel(ITEMS_KEY, dead_id)
            pipe.lpush(AUDIT_KEY, json.dumps(entry))
            return entry

        entry: dict[str, Any] = self.client.transaction(
            settle, KEY, ITEMS_KEY, value_from_callable=True
        )
        return entry

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(value) for value in self.client.lrange(AUDIT_KEY, 0, -1)]

    def count(self) -> int:
        return int(self.client.get(COUNT_KEY) or 0)


class FileDeadLetters:
    """The dead letters of the embedded file broker: files in ``folder``; requeue writes
    the item back as a message file of its queue with ``put`` (the broker's own writer)."""

    def __init__(self, folder: Path, put: Callable[[str, bytes], None] | None = None) -> None:
        self.folder = Path(folder)
        self.put = put

    def bury(self, queue: str, item: Any, reason: str, *, tag: str = "") -> str:
        raw = as_bytes(item)
        dead_id = f"dl-{tag}" if tag else f"dl-{uuid.uuid4().hex}"
        record = {"id": dead_id, "list": queue, "reason": reason, "at": now_iso()}
        record["size"] = len(raw)
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / f"{dead_id}.json").exists():
            _write(self.folder / f"{dead_id}.item", raw)
            _write(self.folder / f"{dead_id}.json", json.dumps(record).encode())
            _append(self.folder / "count", b"1\n")
        logged(dead_id, queue, reason)
        return dead_id

    def list(self) -> list[dict[str, Any]]:
        if not self.folder.is_dir():
            return []
        records = [json.loads(path.read_text()) for path in self.folder.glob("dl-*.json")]
        return sorted(records, key=lambda record: (record["at"], record["id"]))

    def record(self, dead_id: str) -> dict[str, Any]:
        path = self._path(dead_id, "json")
        if not path.is_file():
            raise NotFound(dead_id)
        return dict(json.loads(path.read_text()))

    def item(self, dead_id: str) -> bytes:
        path = self._path(dead_id, "item")
        if not path.is_file():
            raise NotFound(dead_id)
        return path.read_bytes()

    def requeue(self, dead_id: str, actor: str) -> dict[str, Any]:
        return self._settle(dead_id, "requeue", actor, None)

    def drop(self, dead_id: str, reason: str, actor: str) -> dict[str, Any]:
        return self._settle(dead_id, "drop", actor, reason)

    def _settle(self, dead_id: str, action: str, actor: str, why: str | None) -> dict[str, Any]:
        record, item = self.record(dead_id), self.item(dead_id)
        entry = _audit_entry(record, action, actor, why, item)
        try:  # claim it first: of two operators at once, one settles it
            os.rename(self._path(dead_id, "json"), self._path(dead_id, "settling"))
        except FileNotFoundError:
            raise NotFound(dead_id) from None
        if action == "requeue":
            if self.put is None:
                raise RuntimeError("no file broker to requeue to")
            self.put(entry["list"], item)
        _append(self.folder / "audit.jsonl", (json.dumps(entry) + "\n").encode())
        self._path(dead_id, "item").unlink(missing_ok=True)
        self._path(dead_id, "settling").unlink(missing_ok=True)
        return entry

    def audit(self) -> list[dict[str, Any]]:
        path = self.folder / "audit.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in reversed(path.read_text().splitlines()) if line]

    def count(self) -> int:
        path = self.folder / "count"
        return len(path.read_bytes().splitlines()) if path.is_file() else 0

    def _path(self, dead_id: str, suffix: str) -> Path:
        if "/" in dead_id or "\\" in dead_id or not dead_id.startswith("dl-"):
            raise NotFound(dead_id)
        return self.folder / f"{dead_id}.{suffix}"


def _audit_entry(
    record: dict[str, Any], action: str, actor: str, why: str | None, item: bytes
) -> dict[str, Any]:
    entry = {**record, "action": action, "actor": actor, "action_at": now_iso()}
    if why is not None:
        entry["action_reason"] = why
    if action == "drop":  # what was dropped stays readable in the audit
        entry["item"] = item.decode("utf-8", "backslashreplace")
    return entry


def _write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{uuid.uuid4().hex}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def for_channel(channel: Any) -> DeadLetters:
    """The dead letters of the broker ``channel`` belongs to (Redis or the file broker)."""
    folder = getattr(channel, "data_folder_in", None)
    if folder is not None:
        return FileDeadLetters(Path(folder) / FOLDER, _file_put(channel))
    # a client of its own: the channel's may be the one its event loop polls with
    client = channel._create_client()
    return RedisDeadLetters(client, (channel.unacked_key, channel.unacked_index_key))


def for_settings() -> DeadLetters:
    """The dead letters of the configured broker, for the command line."""
    from dust.worker.settings import get_settings

    settings = get_settings()
    if settings.uses_embedded_broker:
        from dust.worker.app import broker_options

        folder = Path(broker_options(settings)["data_folder_in"])
        return FileDeadLetters(folder / FOLDER, _folder_put(folder))
    scheme = settings.broker.split("://", 1)[0]
    if scheme not in ("redis", "rediss"):
        raise RuntimeError(f"dead letters are kept for Redis and the embedded broker, not {scheme}")
    import redis

    return RedisDeadLetters(redis.Redis.from_url(settings.broker))


def _file_put(channel: Any) -> Callable[[str, bytes], None]:
    return _folder_put(Path(channel.data_folder_out))


def _folder_put(folder: Path) -> Callable[[str, bytes], None]:
    def put(queue: str, item: bytes) -> None:
        from time import monotonic

        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        _write(folder / name, item)

    return put


def bury_message(message: Any, reason: str) -> str | None:
    """Bury a message the worker received (a kombu message, delivered and unacknowledged)
    as it was received, then acknowledge it. None when even that failed (it stays
    unacknowledged: the broker hands it out again)."""
    from kombu.utils.json import dumps

    queue = (message.delivery_info or {}).get("routing_key") or "?"
    try:
        raw = getattr(message, "_raw", None)
        item = dumps(raw) if raw is not None else as_bytes(message.body)
        tag = str(message.delivery_tag or "")
        dead_id = for_channel(message.channel).bury(queue, item, reason, tag=tag)
    except Exception:
        log.exception("could not dead-letter a message (%s); left unacknowledged", reason)
        return None
    try:
        message.ack()
    except Exception:  # buried already; a redelivery is buried again under the same id
        log.exception("could not acknowledge dead-lettered %s", dead_id)
    return dead_id
