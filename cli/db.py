"""``dust db``: create or migrate the schema, and say where it is."""

from __future__ import annotations

import typer

from dust.cli.common import JsonOption, fail, print_json, safe_url
from dust.models.schema import UnknownRevision, current, heads, history, upgrade
from dust.worker.settings import get_settings

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Create or migrate the schema (Alembic)."""

    url = get_settings().database
    try:
        upgrade(url, revision)
    except UnknownRevision:
        raise fail(f"no migration {revision!r}: see `dust db history`") from None
    typer.echo(f"schema at {revision} on {safe_url(url)}")


@app.command("current")
def db_current(as_json: JsonOption = False) -> None:
    """The revision the database is at, and whether that is the code's head. Exit 1
    when it is behind (or has no schema)."""

    url = get_settings().database
    at, head = sorted(current(url)), sorted(heads())
    if as_json:
        print_json({"database": safe_url(url), "current": at, "head": head, "ok": at == head})
    elif not at:
        typer.echo(f"no Dust schema on {safe_url(url)}")
    else:
        state = "(head)" if at == head else f"(behind: head is {', '.join(head)})"
        typer.echo(f"{', '.join(at)} {state} on {safe_url(url)}")
    if at != head:
        raise fail("the schema is not at head: run `dust db upgrade`")


@app.command("history")
def db_history(as_json: JsonOption = False) -> None:
    """Every migration, newest first."""

    revisions = history()
    if as_json:
        print_json([vars(r) for r in revisions])
        return
    for revision in revisions:
        typer.echo(f"{revision.down_revision or '<base>'} -> {revision.revision}  {revision.doc}")
