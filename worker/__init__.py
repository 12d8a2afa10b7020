"""Dust's process-level pieces: settings, database, the Celery app, the CLI."""
