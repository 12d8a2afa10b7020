"""Admin one-off tasks: adjustments, claims, product settings, replays, backfill batches."""

from __future__ import annotations

from worker.app import app  # noqa: F401
