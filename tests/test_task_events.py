"""Batched messages send Celery's task signals, one per message, as a task run alone would
(``worker/task_events.py``): what OpenTelemetry's and other integrations hook into."""

from __future__ import annotations

from typing import Any

import pytest
from celery import signals

from dust.subscribers.base import Outcome


def body(envelope: Any) -> list[Any]:
    return [[envelope], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]


@pytest.fixture
def seen() -> Any:
    calls: list[tuple[str, str, Any]] = []

    def prerun(task_id: str, task: Any, args: Any, **_: Any) -> None:
        assert task.request.id == task_id and task.request.args == args
        calls.append(("prerun", task_id, args[0]["id"]))

    def postrun(task_id: str, task: Any, retval: Any, state: str, **_: Any) -> None:
        assert task.name == "dust.handle_event" and task.request.id == task_id
        calls.append(("postrun", task_id, (retval, state)))

    def failure(task_id: str, exception: Exception, **_: Any) -> None:
        calls.append(("failure", task_id, str(exception)))

    signals.task_prerun.connect(prerun, weak=False)
    signals.task_postrun.connect(postrun, weak=False)
    signals.task_failure.connect(failure, weak=False)
    yield calls
    signals.task_prerun.disconnect(prerun)
    signals.task_postrun.disconnect(postrun)
    signals.task_failure.disconnect(failure)


def test_each_batched_message_gets_prerun_postrun_and_failure(
    dust: Any, seen: list[tuple[str, str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dust.subscribers import SUBSCRIBERS
    from dust.tasks.events import handle_batch

    def broken(session: Any, envelope: Any, context: Any) -> Outcome:
        raise RuntimeError("a bug")

    monkeypatch.setitem(SUBSCRIBERS, "test.broken", broken)
    envelopes = [
        {"id": "evt_s1", "name": "customer.created", "data": {"id": "cus_s1"}},
        {"id": "evt_s2", "name": "test.broken", "data": {"id": "x"}},
        {"id": "evt_s3", "name": "nobody.listens", "data": {"id": "y"}},
    ]
    ids = ["task-1", "task-2", "task-3"]

    statuses = handle_batch([body(e) for e in envelopes], ids, "batch-1")

    assert statuses == ["processed", "failed", "ignored"]
    assert [c for c in seen if c[0] == "prerun"] == [
        ("prerun", "task-1", "evt_s1"),
        ("prerun", "task-2", "evt_s2"),
        ("prerun", "task-3", "evt_s3"),
    ]
    assert [c for c in seen if c[0] == "postrun"] == [
        ("postrun", "task-1", ("processed", "SUCCESS")),
        ("postrun", "task-2", ("failed", "FAILURE")),
        ("postrun", "task-3", ("ignored", "SUCCESS")),
    ]
    failures = [c for c in seen if c[0] == "failure"]
    assert len(failures) == 1 and failures[0][1] == "task-2" and "a bug" in failures[0][2]
    # each prerun before its postrun, and the failure before its postrun
    order = [(kind, task) for kind, task, _ in seen]
    assert order.index(("failure", "task-2")) < order.index(("postrun", "task-2"))
    assert all(order.index(("prerun", t)) < order.index(("postrun", t)) for t in ids)
