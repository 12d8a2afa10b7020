"""The worker's log format: Celery's readable text lines (default), or with
``DUST_LOG_FORMAT=json`` one JSON object per line, made by structlog's formatter on the
standard library's logging (so Celery's, kombu's and Dust's loggers all go through it).

Dust's own lines carry their fields as ``extra`` (``event_id``, ``event_name``,
``status``, ``duration_ms``, ``batch_id``, ...), which the JSON lines show as keys. No line
at INFO holds a payload or a connection string with its password.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

#: Attributes of every LogRecord: not copied into the JSON object as extra fields.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def json_formatter() -> logging.Formatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
            structlog.stdlib.ExtraAdder(),
            _process_id,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=str),
        ],
    )


def _process_id(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    record = event.get("_record")
    if record is not None:
        event["pid"] = record.process
    return event


def configure_json(level: int | str = logging.INFO) -> None:
    """Send every logger's records to stderr as JSON lines (replacing the root's handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Python's warnings (Celery's "running as root", deprecations) as JSON lines too.
    logging.captureWarnings(True)
