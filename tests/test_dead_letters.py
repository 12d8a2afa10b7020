"""The dead-letter list of the embedded file broker (``worker/dead_letters.py``): what its
fetch does with a file that is not a kombu message, and the operator's requeue and drop.
Redis's is tested through real workers (tests/e2e/test_hostile_input.py)."""

from __future__ import annotations

import json
from pathlib import Path

from kombu import Connection

from dust.worker import filebroker  # noqa: F401  (the file transport with dead letters)
from dust.worker.dead_letters import FileDeadLetters, NotFound


def connection(folder: Path) -> Connection:
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    options["control_folder"] = str(folder / "control")
    return Connection("filesystem://", transport_options=options)


def test_files_that_are_not_kombu_messages_go_to_dead_letters_and_the_next_is_taken(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "broker"
    folder.mkdir()
    bad = [b"not json", b"[1, 2]", b"", json.dumps({"properties": {}}).encode()]
    for n, item in enumerate(bad):
        (folder / f"{n:04d}_x{n}.dust.events.msg").write_bytes(item)
    with connection(folder) as conn:
        conn.SimpleQueue("dust.events").put({"ok": True})  # written after them: taken last
        channel = conn.default_channel
        message = channel._get("dust.events")
        assert channel.Message(message, channel=channel).decode() == {"ok": True}
    store = FileDeadLetters(folder / "dead")
    listed = store.list()
    assert sorted(store.item(d["id"]) for d in listed) == sorted(bad)
    assert all(d["reason"].startswith("not a kombu message") for d in listed)
    assert store.count() == len(bad)


def test_requeue_and_drop_are_audited(tmp_path: Path) -> None:
    folder = tmp_path / "broker"
    folder.mkdir()
    put: list[tuple[str, bytes]] = []
    store = FileDeadLetters(folder / "dead", lambda queue, item: put.append((queue, item)))
    first = store.bury("dust.events", b"one", "not JSON")
    second = store.bury("dust.events", b"two", "not JSON")
    assert store.requeue(first, "ops")["action"] == "requeue"
    assert put == [("dust.events", b"one")]
    dropped = store.drop(second, "a stray test item", "ops")
    assert (dropped["actor"], dropped["action_reason"], dropped["item"]) == (
        "ops",
        "a stray test item",
        "two",
    )
    assert store.list() == []
    assert [a["action"] for a in store.audit()] == ["drop", "requeue"]  # newest first
    for settled in (first, second, "../etc", "x"):
        try:
            store.drop(settled, "again", "ops")
        except NotFound:
            pass
        else:
            raise AssertionError(f"{settled} was settled twice")
