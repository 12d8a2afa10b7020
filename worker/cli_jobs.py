"""``dust expire`` and ``dust reconcile``: the scheduled jobs, run by hand."""

from __future__ import annotations

from worker.cli import app  # noqa: F401  (commands register on the shared Typer app)
