"""Scheduled jobs run by Celery beat: expire holds, expire lots, reconcile."""

from __future__ import annotations

from worker.app import app  # noqa: F401
