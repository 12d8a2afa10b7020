"""``dust backfill``: load a historical JSONL file of events, batch by batch, resumable."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from celery.exceptions import TimeoutError as ReplyTimeout
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from sqlalchemy import select

from dust.cli import common
from dust.cli.common import ActorOption, JsonOption, fail, print_json
from dust.models import (
    Backfill,
    BackfillBatch,
)
from dust.models.base import insert_for, utcnow
from dust.worker.app import EVENTS_QUEUE
from dust.worker.app import app as celery
from dust.worker.db import session_scope
from dust.worker.errors import safe_message
from dust.worker.names import BACKFILL_BATCH

app = typer.Typer()

# -- backfill --------------------------------------------------------------------------

#: A batch is also cut when its lines reach this size, to keep messages small.
BATCH_MAX_BYTES = 4 * 1024 * 1024


@dataclass
class Batch:
    first_line: int
    line_count: int
    lines: list[str]


#: How much of each end of a file its fingerprint reads.
FINGERPRINT_BYTES = 64 * 1024


def fingerprint(path: Path) -> str:
    """sha256 of the file's size and its first and last 64 KiB: cheap on a file of
    millions of lines; a file that grew or changed is a new backfill."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode() + b"\n")
    with path.open("rb") as handle:
        digest.update(handle.read(FINGERPRINT_BYTES))
        if size > FINGERPRINT_BYTES:
            handle.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
            digest.update(handle.read(FINGERPRINT_BYTES))
    return digest.hexdigest()


def _count_lines(path: Path) -> int:
    count, last = 0, b"\n"
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (0 if last == b"\n" else 1)


def _batches(path: Path, size: int) -> Iterator[Batch]:
    """The file's lines in batches, streamed (constant memory). Blank lines count but are
    not sent; any other line is sent as it is (invalid JSON is recorded ``rejected``)."""
    first, lines, count, weight = 1, [], 0, 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            count += 1
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if text.strip():
                lines.append(text)
                weight += len(raw)
            if count >= size or weight >= BATCH_MAX_BYTES:
                yield Batch(first, count, lines)
                first, lines, count, weight = number + 1, [], 0, 0
    if count:
        yield Batch(first, count, lines)


class Covered:
    """The line ranges already done, merged; asks whether a batch is inside them."""

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        merged: list[list[int]] = []
        for first, count in sorted(ranges):
            end = first + count
            if merged and first <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([first, end])
        self.ranges = merged
        self.index = 0

    def __contains__(self, batch: Batch) -> bool:
        # Batches come in file order, so the position only moves forward.
        end = batch.first_line + batch.line_count
        while self.index < len(self.ranges) and self.ranges[self.index][1] <= batch.first_line:
            self.index += 1
        if self.index == len(self.ranges):
            return False
        start, stop = self.ranges[self.index]
        return start <= batch.first_line and end <= stop


@app.command()
def backfill(
    file: Annotated[Path, typer.Argument(help="A JSONL file of envelopes, one per line.")],
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=10000, help="Lines per task.")
    ] = 500,
    in_flight: Annotated[
        int,
        typer.Option(
            "--in-flight",
            min=1,
            max=64,
            help="Batches running at once. 1 (default) applies the file in its order;"
            " more is faster, but spending may then see earlier earnings in another order.",
        ),
    ] = 1,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for one batch.")
    ] = 600,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Load historical envelopes through the exactly-once path, with a progress bar.

    Interrupted, the same command resumes where it stopped (the file is recognised by its
    fingerprint); applying a line twice changes nothing. Lots expire relative to each
    event's occurred_at, so a backfill gives the ledger the live stream would have."""

    if not file.is_file():
        raise fail(f"{file}: no such file")
    who = common.actor(actor)
    try:
        key = fingerprint(file)
        total = _count_lines(file)
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror}") from None
    backfill_id, status, done_ranges = _open_backfill(key, file, total, who)
    if status == "finished":
        summary = _finish(backfill_id, total)
        _print_summary(summary, as_json, already=True)
        return
    covered = Covered(done_ranges)
    already = sum(count for _, count in done_ranges)
    console = Console(stderr=True)
    if already:
        console.print(f"resuming backfill {backfill_id}: {already} of {total} lines already done")
    progress = Progress(
        TextColumn("backfill"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("lines"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    pending: deque[tuple[Batch, Any]] = deque()
    try:
        with progress:
            task = progress.add_task("backfill", total=total)
            for batch in _batches(file, batch_size):
                if batch in covered:
                    progress.advance(task, batch.line_count)
                    continue
                while len(pending) >= in_flight:
                    progress.advance(task, _settle(*pending.popleft(), timeout))
                pending.append((batch, _send_batch(backfill_id, batch)))
            while pending:
                progress.advance(task, _settle(*pending.popleft(), timeout))
    except KeyboardInterrupt:
        raise fail("interrupted; run the same command again to resume", 130) from None
    except typer.Exit:
        for _, result in pending:  # let the batches already sent finish on their own
            common.forget(result)
        raise
    summary = _finish(backfill_id, total)
    _print_summary(summary, as_json, already=False)


def _open_backfill(
    key: str, path: Path, total: int, actor: str
) -> tuple[int, str, list[tuple[int, int]]]:

    with session_scope() as session:
        insert = insert_for(session)
        session.execute(
            insert(Backfill)
            .values(
                fingerprint=key,
                path=str(path.resolve()),
                lines_total=total,
                lines_done=0,
                status="running",
                actor=actor,
                started_at=utcnow(),
            )
            .on_conflict_do_nothing()
        )
        row = session.scalar(select(Backfill).where(Backfill.fingerprint == key))
        assert row is not None
        ranges = session.execute(
            select(BackfillBatch.first_line, BackfillBatch.line_count)
            .where(BackfillBatch.backfill_id == row.id)
            .order_by(BackfillBatch.first_line)
        ).all()
        return row.id, row.status, [(int(f), int(c)) for f, c in ranges]


def _send_batch(backfill_id: int, batch: Batch) -> Any:

    kwargs = {
        "backfill_id": backfill_id,
        "first_line": batch.first_line,
        "line_count": batch.line_count,
        "lines": batch.lines,
    }
    try:
        return celery.send_task(BACKFILL_BATCH, kwargs=kwargs, queue=EVENTS_QUEUE)
    except Exception as exc:
        raise fail(
            f"cannot reach the broker ({type(exc).__name__}: {safe_message(exc)}); run again to resume"
        ) from None


def _settle(batch: Batch, result: Any, timeout: float) -> int:
    """Wait for one batch; its line count once done, or stop the command."""

    where = f"lines {batch.first_line}-{batch.first_line + batch.line_count - 1}"
    try:
        reply = result.get(timeout=timeout, interval=0.05)
    except ReplyTimeout:
        raise fail(
            f"no worker finished {where} within {timeout:.0f}s; run the same command again"
            " to resume"
        ) from None
    except Exception as exc:
        raise fail(f"{where}: the worker failed ({type(exc).__name__}: {exc})") from None
    finally:
        common.forget(result)
    if not isinstance(reply, dict) or reply.get("status") != "ok":
        reason = reply.get("reason") if isinstance(reply, dict) else repr(reply)
        raise fail(f"{where}: {reason}; run the same command again to resume")
    return batch.line_count


def _finish(backfill_id: int, total: int) -> dict[str, Any]:
    """Mark the backfill finished and add up what its batches did."""

    counts: Counter[str] = Counter()
    with session_scope() as session:
        row = session.get(Backfill, backfill_id, with_for_update=True)
        assert row is not None
        stmt = select(BackfillBatch.counts).where(BackfillBatch.backfill_id == backfill_id)
        for (text,) in session.execute(stmt.execution_options(yield_per=1000)):
            counts.update(json.loads(text or "{}"))
        if row.status != "finished":
            row.status = "finished"
            row.finished_at = utcnow()
            row.lines_total = total
            row.lines_done = total
        return {
            "backfill_id": row.id,
            "path": row.path,
            "lines": row.lines_total,
            "status": row.status,
            "started_at": row.started_at.isoformat(),
            "finished_at": row.finished_at.isoformat() if row.finished_at else None,
            "events": dict(sorted(counts.items())),
        }


def _print_summary(summary: dict[str, Any], as_json: bool, *, already: bool) -> None:
    if as_json:
        print_json({**summary, "already_finished": already})
        return
    counts = dict(summary["events"])
    again = counts.pop("duplicate", 0)
    events = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no events"
    if again:
        events += f" ({again} of them recorded before)"
    head = "already loaded" if already else "loaded"
    typer.echo(
        f"backfill {summary['backfill_id']} {head}: {summary['lines']} lines of"
        f" {summary['path']}; events: {events}"
    )
