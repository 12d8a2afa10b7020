"""Every Dust task has the one base class (tasks/base.py): its transaction, its retry
policy of a transient error, its reply shape."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from dust.tasks import admin, events, jobs, noop, requests, resolutions  # noqa: F401
from dust.tasks.base import AdminTask, DustTask, RequestTask, backoff
from dust.worker import names
from dust.worker.app import app


def test_every_dust_task_has_the_base_class() -> None:
    ours = {name: task for name, task in app.tasks.items() if name.startswith("dust.")}
    assert len(ours) >= 16
    assert [name for name, task in ours.items() if not isinstance(task, DustTask)] == []


def test_every_task_name_is_written_once() -> None:
    """The names the tasks register under are those of worker/names.py."""
    written = {
        value
        for key, value in vars(names).items()
        if key.isupper() and isinstance(value, str) and value.startswith("dust.")
        and not key.endswith("_QUEUE")
    } | set(names.JOBS.values())  # fmt: skip
    registered = {name for name in app.tasks if name.startswith("dust.")}
    assert registered == written


def test_one_backoff() -> None:
    assert [backoff(n) for n in range(7)] == [2, 4, 8, 16, 32, 60, 60]


def test_the_families_reply_in_their_shapes() -> None:
    from dust.tasks.admin import AdjustRequest

    with pytest.raises(ValidationError) as caught:
        AdjustRequest.model_validate({"customer_id": "c"})
    refused = app.tasks[names.ADJUST].refuse(caught.value)
    assert refused["status"] == "error" and refused["reason"].startswith("invalid request: ")
    refused = app.tasks[names.RESERVE].refuse(caught.value)
    assert refused["status"] == "rejected" and refused["reason"] == "invalid_request"
    assert isinstance(app.tasks[names.ADJUST], AdminTask)
    assert isinstance(app.tasks[names.RESERVE], RequestTask)


def test_a_transient_error_goes_to_a_later_delivery_until_retries_run_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task = app.tasks[names.ADJUST]
    lost = OperationalError("SELECT 1", {}, Exception("server closed the connection"))
    asked: list[int] = []

    class Retry(Exception):
        pass

    def retry(countdown: int, **_: object) -> Retry:
        asked.append(countdown)
        raise Retry

    monkeypatch.setattr(task, "retry", retry)
    for retries in range(task.transient_retries):
        task.push_request(retries=retries)
        try:
            with pytest.raises(Retry):
                task.retry_if_transient(lost)
        finally:
            task.pop_request()
    task.push_request(retries=task.transient_retries)
    try:
        task.retry_if_transient(lost)  # no retry left: returns, for the final answer
        task.retry_if_transient(ValueError("a bug"))  # never retried
    finally:
        task.pop_request()
    assert asked == [2, 4, 8]
