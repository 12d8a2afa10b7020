"""Admin one-off commands: adjustments, claims, product settings, replays, backfill, export.

Each enqueues its Celery task and waits for the result.
"""

from __future__ import annotations

from worker.cli import app  # noqa: F401  (commands register on the shared Typer app)
