"""``dust health``: can this deployment work? For people and for readiness probes."""

from __future__ import annotations

from typing import Annotated

import typer

from dust.worker.cli import JsonOption, app, print_json
from dust.worker.settings import get_settings


@app.command()
def health(
    as_json: JsonOption = False,
    timeout: Annotated[
        float, typer.Option(min=0.1, max=60, help="Seconds to wait for workers' replies.")
    ] = 3.0,
    workers: Annotated[
        bool,
        typer.Option(
            "--workers/--no-workers",
            help="Also ping the workers (--no-workers: a worker's own liveness probe).",
        ),
    ] = True,
) -> None:
    """Database reachable, schema at head, broker reachable, every worker answering a
    ping. Exit 0 when all hold, 1 naming what failed."""
    from dust.worker import health as checks
    from dust.worker.app import app as celery_app

    settings = get_settings()
    found = checks.run_all(settings, celery_app, timeout)
    if not workers:
        found = [c for c in found if c.name != "workers"]
    ok = all(c.ok for c in found)
    if as_json:
        print_json({"ok": ok, "checks": [c.as_json() for c in found]})
    else:
        for check in found:
            typer.echo(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    if not ok:
        failed = ", ".join(c.name for c in found if not c.ok)
        typer.echo(f"dust: unhealthy: {failed}", err=True)
        raise typer.Exit(1)
