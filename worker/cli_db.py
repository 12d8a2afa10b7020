"""``dust db current`` and ``dust db history``, beside ``dust db upgrade`` (worker/cli.py)."""

from __future__ import annotations

import typer

from dust.worker.cli import JsonOption, _safe_url, db_app, fail, print_json
from dust.worker.settings import get_settings


@db_app.command("current")
def db_current(as_json: JsonOption = False) -> None:
    """The revision the database is at, and whether that is the code's head. Exit 1
    when it is behind (or has no schema)."""
    from dust.models.schema import current, heads

    url = get_settings().database
    at, head = sorted(current(url)), sorted(heads())
    if as_json:
        print_json({"database": _safe_url(url), "current": at, "head": head, "ok": at == head})
    elif not at:
        typer.echo(f"no Dust schema on {_safe_url(url)}")
    else:
        state = "(head)" if at == head else f"(behind: head is {', '.join(head)})"
        typer.echo(f"{', '.join(at)} {state} on {_safe_url(url)}")
    if at != head:
        raise fail("the schema is not at head: run `dust db upgrade`")


@db_app.command("history")
def db_history(as_json: JsonOption = False) -> None:
    """Every migration, newest first."""
    from dust.models.schema import history

    revisions = history()
    if as_json:
        print_json([vars(r) for r in revisions])
        return
    for revision in revisions:
        typer.echo(f"{revision.down_revision or '<base>'} -> {revision.revision}  {revision.doc}")
