"""``dust dead-letters``: what arrived on a Dust queue and could never be a task.

The worker moves such items, as received, to the broker's dead-letter list
(``worker/dead_letters.py``). Here an operator lists them, puts one back on its queue
(after fixing what refused it, or to see it refused again), or drops it with a reason.
Requeue and drop are audited (who, why, when) beside the list: ``list --audit`` shows it.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dust.worker.cli import JsonOption, actor_option, app, fail, print_json

dead_letters_app = typer.Typer(
    help="Items the worker could not take (not Celery messages, too large, ...).",
    no_args_is_help=True,
)
app.add_typer(dead_letters_app, name="dead-letters")

ActorOption = Annotated[
    str | None, typer.Option("--actor", help="Who acts (default: the operating-system user).")
]


def _store() -> Any:
    from dust.worker.dead_letters import for_settings

    try:
        return for_settings()
    except RuntimeError as exc:
        raise fail(str(exc)) from None


@dead_letters_app.command("list")
def list_dead_letters(
    audit: Annotated[
        bool, typer.Option("--audit", help="Show what operators did (requeue, drop) instead.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Dead letters, oldest first: id, queue, reason, when, size; and how many ever."""
    store = _store()
    if audit:
        rows = store.audit()
        if as_json:
            print_json(rows)
            return
        for row in rows:
            why = f" ({row['action_reason']})" if row.get("action_reason") else ""
            typer.echo(
                f"{row['action_at']}  {row['action']:<8} {row['id']}  by {row['actor']}{why}"
            )
        return
    rows = store.list()
    if as_json:
        print_json({"dead_letters": rows, "count_ever": store.count()})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("at", "queue", "reason", "bytes")
    table.add_column("id", overflow="fold")  # whole: an operator copies it
    for row in rows:
        table.add_row(str(row["at"])[:23], row["list"], row["reason"], str(row["size"]), row["id"])
    Console().print(table)
    typer.echo(f"{len(rows)} dead letters now, {store.count()} ever")


@dead_letters_app.command("show")
def show_dead_letter(dead_id: str, as_json: JsonOption = False) -> None:
    """One dead letter with the item as received (bytes that are not UTF-8 escaped)."""
    from dust.worker.dead_letters import NotFound

    store = _store()
    try:
        record = {**store.record(dead_id), "item": store.item(dead_id)}
    except NotFound:
        raise fail(f"no dead letter {dead_id}") from None
    record["item"] = record["item"].decode("utf-8", "backslashreplace")
    print_json(record) if as_json else typer.echo("\n".join(f"{k}: {v}" for k, v in record.items()))


@dead_letters_app.command("requeue")
def requeue_dead_letter(
    dead_id: str, actor: ActorOption = None, as_json: JsonOption = False
) -> None:
    """Put a dead letter back on its queue exactly as it was received (audited)."""
    from dust.worker.dead_letters import NotFound

    try:
        entry = _store().requeue(dead_id, actor_option(actor))
    except NotFound:
        raise fail(f"no dead letter {dead_id}") from None
    print_json(entry) if as_json else typer.echo(f"requeued {dead_id} on {entry['list']}")


@dead_letters_app.command("drop")
def drop_dead_letter(
    dead_id: str,
    reason: Annotated[str | None, typer.Option("--reason", help="Why it is dropped.")] = None,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a dead letter for good; the item, who, why and when stay in the audit."""
    from dust.worker.dead_letters import NotFound

    if reason is None or not reason.strip():
        raise fail("--reason is required: say why it is dropped, it is kept in the audit")
    try:
        entry = _store().drop(dead_id, reason.strip(), actor_option(actor))
    except NotFound:
        raise fail(f"no dead letter {dead_id}") from None
    print_json(entry) if as_json else typer.echo(f"dropped {dead_id}: {reason.strip()}")
