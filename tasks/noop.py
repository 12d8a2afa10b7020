"""``dust.noop``: a task that does nothing, for measuring the Celery ceiling.

``bench/e2e.py`` pushes N of these onto ``dust.events`` and times the worker to the last
ack, next to N ``order.placed`` events on the same worker with the same options: the
difference is what Dust itself costs per event. Nothing in Dust sends it.
"""

from __future__ import annotations

from dust.worker.app import app


@app.task(name="dust.noop", ignore_result=True)
def noop(*_args: object, **_kwargs: object) -> None:
    """Accept any arguments and do nothing (ignore_result, as ``dust.handle_event``)."""
