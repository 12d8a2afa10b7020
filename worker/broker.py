"""Where the broker is and how Dust talks to it: the embedded file broker's folders, Redis's
visibility timeout and its atomic transport. Used by the Celery app and the dead letters."""

from __future__ import annotations

from typing import Any

from dust.worker.settings import Settings


def broker_options(settings: Settings) -> dict[str, Any]:
    if settings.uses_embedded_broker:
        folder = settings.embedded_dir / "broker"
        (folder / "control").mkdir(parents=True, exist_ok=True)
        (settings.embedded_dir / "results").mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "control_folder": str(folder / "control"),
            # The file broker is polled; the default 1 s would dominate a demo's latency.
            "polling_interval": 0.05,
        }
    # After a crash, Redis hands an unacknowledged message out again after this long.
    visibility = settings.visibility_timeout_seconds
    return {
        "visibility_timeout": visibility,
        # ... but only when a live worker sweeps for such messages. kombu sweeps every
        # 10 s and scans on every 10th sweep only: ~100 s on top of the timeout (a 10 s
        # timeout became ~110 s). Scan on every sweep, every tenth of the timeout (1-10 s).
        "unacked_restore_interval": max(1, min(10, visibility // 10)),
        "unacked_restore_throttle": 1,
        # The sweep holds a lock in Redis (kombu's default: for 300 s). A worker killed
        # while sweeping left it in place, and no message came back for those 5 minutes
        # (found by bench/faults.py). A sweep takes milliseconds, and two sweeps at once
        # are safe (each restore is a WATCH transaction), so the lock lives 2-30 s.
        "unacked_mutex_expire": max(2, min(30, visibility // 5)),
    }


def broker_transport(settings: Settings) -> str | None:
    if settings.broker.split("://", 1)[0] in ("redis", "rediss"):
        return "dust.worker.redis_transport:Transport"
    return None
