"""Admin one-off commands: adjustments, claims, product settings, replays, backfill, export.

Each command that changes the ledger validates its input here (bad input never reaches
the ledger), enqueues its ``dust.admin.*`` task and waits for the reply. The request
message expires when the command stops waiting, so a request nobody answered is never
applied later behind the operator's back. Reads (``products list``, ``export``) go to the
database directly.

Errors print one line ``dust: ...`` on stderr and exit 1 (Typer's own usage errors: 2).
"""

from __future__ import annotations

import csv
import getpass
import hashlib
import json
import re
import sys
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from dust.ledger.currencies import problem as currency_problem
from dust.models.base import insert_for
from dust.worker import display
from dust.worker.cli import JsonOption, app, events_app, fail, print_json
from dust.worker.settings import get_settings


def safe_message(exc: BaseException) -> str:
    """The error's first line, any credentials in a URL masked (dust.tasks.inbox.safe_message)."""
    from dust.tasks.inbox import safe_message as first_line_scrubbed

    return first_line_scrubbed(exc)


products_app = typer.Typer(help="Product dust settings.", no_args_is_help=True)
app.add_typer(products_app, name="products")

# The task names (tasks/admin.py); spelled out here so the CLI need not import the tasks.
ADJUST = "dust.admin.adjust"
CLAIM = "dust.admin.claim"
SET_PRODUCT = "dust.admin.set_product"
REPLAY = "dust.admin.replay"
BACKFILL_BATCH = "dust.admin.backfill_batch"
REPLAYABLE = ("failed", "needs_attention")

#: How long a command waits for a worker's reply to an admin request.
REPLY_TIMEOUT = 60.0
#: Largest amount an adjustment accepts (as for amounts in events).
MAX_AMOUNT = 10**15

ActorOption = Annotated[
    str | None,
    typer.Option("--actor", help="Who is doing this (default: the operating-system user)."),
]


# -- shared helpers --------------------------------------------------------------------


def _actor(actor: str | None) -> str:
    if actor is not None:
        if not actor.strip():
            raise fail("--actor must not be empty")
        if len(actor.strip()) > 200:
            raise fail("--actor is longer than 200 characters")
        return actor.strip()
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (e.g. a bare container uid)
        raise fail("cannot tell which user is running this; give --actor NAME") from None


def _whole(value: str, what: str, *, minimum: int) -> int:
    text = value.strip()
    if not re.fullmatch(r"[0-9]+", text):
        raise fail(f"{what} must be a whole number, got {value!r}")
    number = int(text)
    if number < minimum:
        raise fail(f"{what} must be at least {minimum}, got {number}")
    if number > MAX_AMOUNT:
        raise fail(f"{what} must be at most {MAX_AMOUNT}, got {number}")
    return number


def _customer(customer_id: str) -> str:
    text = customer_id.strip()
    if not text or len(text) > 200:
        raise fail("CUSTOMER_ID must be 1 to 200 characters")
    return text


def _instant(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 instant with an offset, or a date (midnight UTC)."""
    if value is None:
        return None
    text = value.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        instant = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise fail(
            f"{option}: {value!r} is not a date or an ISO 8601 instant"
            " (e.g. 2026-11-20 or 2026-11-20T10:00:00Z)"
        ) from None
    if instant.tzinfo is None:
        raise fail(f"{option}: {value!r} needs a UTC offset (e.g. 2026-11-20T10:00:00Z)")
    return instant.astimezone(UTC)


def _call(task: str, kwargs: dict[str, Any], timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
    """Send an admin task on ``dust.requests``, wait for its reply, fail on an error reply."""
    from celery.exceptions import TimeoutError as ReplyTimeout

    from dust.worker.app import REQUESTS_QUEUE
    from dust.worker.app import app as celery

    try:
        # Unanswered by then, the message expires: a worker started later discards it.
        result = celery.send_task(task, kwargs=kwargs, queue=REQUESTS_QUEUE, expires=timeout)
    except Exception as exc:
        raise fail(f"cannot reach the broker: {type(exc).__name__}: {safe_message(exc)}") from None
    try:
        reply: dict[str, Any] = result.get(timeout=timeout, interval=0.05)
    except ReplyTimeout:
        raise fail(
            f"no worker answered within {timeout:.0f}s (is the Procfile's `requests` process,"
            " `celery -A dust.worker.app worker --queues dust.requests`, running?);"
            " the request expires unapplied"
        ) from None
    except Exception as exc:
        raise fail(f"the worker failed: {type(exc).__name__}: {exc}") from None
    finally:
        _forget(result)
    if not isinstance(reply, dict) or reply.get("status") != "ok":
        reason = reply.get("reason") if isinstance(reply, dict) else repr(reply)
        raise fail(str(reason))
    return reply


def _forget(result: Any) -> None:
    try:
        result.forget()
    except Exception:  # a backend that cannot forget keeps it until result_expires
        pass


def _amount_label(kind: str, currency: str | None) -> str:
    return "dust" if kind == "dust" else f"{currency} store credit"


# -- adjustments -----------------------------------------------------------------------


def _adjust(
    direction: str,
    customer_id: str,
    amount: str,
    kind: str | None,
    currency: str | None,
    reason: str | None,
    idempotency_key: str | None,
    create: bool,
    actor: str | None,
    as_json: bool,
) -> None:
    customer = _customer(customer_id)
    number = _whole(amount, "AMOUNT", minimum=1)
    if kind is None:
        raise fail("--kind is required: dust or store_credit")
    kind = kind.strip().lower()
    if kind not in ("dust", "store_credit"):
        raise fail(f"--kind must be dust or store_credit, got {kind!r}")
    if kind == "store_credit":
        if currency is None:
            raise fail("--currency is required for store_credit (e.g. --currency usd)")
        if (why := currency_problem(currency.strip(), get_settings().currencies)) is not None:
            raise fail(f"--currency: {why}")
        currency = currency.strip().lower()
    elif currency is not None:
        raise fail("--currency is only for --kind store_credit (dust has no currency)")
    if reason is None or not reason.strip():
        raise fail("--reason is required: say why, it is kept with the entry")
    if len(reason.strip()) > 2000:
        raise fail("--reason is longer than 2000 characters")
    if idempotency_key is not None and not (0 < len(idempotency_key.strip()) <= 250):
        raise fail("--idempotency-key must be 1 to 250 characters")
    reply = _call(
        ADJUST,
        {
            "customer_id": customer,
            "direction": direction,
            "amount": number,
            "kind": kind,
            "currency_code": currency,
            "reason": reason.strip(),
            "actor": _actor(actor),
            "idempotency_key": idempotency_key.strip() if idempotency_key else None,
            "create": create,
        },
    )
    if as_json:
        print_json(reply)
        return
    entry, account = reply["entry"], reply["account"]
    what = _amount_label(account["kind"], account["currency_code"])
    prefix = "already posted (same idempotency key): " if reply["repeat"] else ""
    verb = "credited" if entry["direction"] == "credit" else "debited"
    typer.echo(
        f"{prefix}{verb} {entry['amount']} {what} {'to' if verb == 'credited' else 'from'}"
        f" {customer} (entry {entry['id']}, by {entry['actor']}); balance {account['balance']},"
        f" available {account['available']}"
    )


KindOption = Annotated[str | None, typer.Option("--kind", help="dust or store_credit.")]
CurrencyOption = Annotated[
    str | None, typer.Option("--currency", help="Currency of store credit, e.g. usd.")
]
ReasonOption = Annotated[
    str | None, typer.Option("--reason", help="Why (required; kept as the entry's memo).")
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key", help="Posting again with the same key returns the first entry."
    ),
]


@app.command()
def credit(
    customer_id: Annotated[str, typer.Argument(help="The customer.")],
    amount: Annotated[str, typer.Argument(help="Whole points, or minor units of money.")],
    kind: KindOption = None,
    currency: CurrencyOption = None,
    reason: ReasonOption = None,
    idempotency_key: KeyOption = None,
    create: Annotated[
        bool, typer.Option("--create", help="Open the account of a customer Dust has not seen.")
    ] = False,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Admin credit (audited). Dust credited gets a lot expiring DUST_POINTS_TTL_DAYS from now.

    A customer with no account yet is refused unless --create is given."""
    _adjust(
        "credit",
        customer_id,
        amount,
        kind,
        currency,
        reason,
        idempotency_key,
        create,
        actor,
        as_json,
    )


@app.command()
def debit(
    customer_id: Annotated[str, typer.Argument(help="The customer.")],
    amount: Annotated[str, typer.Argument(help="Whole points, or minor units of money.")],
    kind: KindOption = None,
    currency: CurrencyOption = None,
    reason: ReasonOption = None,
    idempotency_key: KeyOption = None,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Admin debit (audited). Never takes the available balance below zero."""
    _adjust(
        "debit", customer_id, amount, kind, currency, reason, idempotency_key, False, actor, as_json
    )


# -- claims ----------------------------------------------------------------------------


@app.command()
def claim(
    code: Annotated[str, typer.Argument(help="The anonymous account's code, SC-....")],
    customer_id: Annotated[str, typer.Argument(help="The customer who receives it.")],
    create: Annotated[
        bool, typer.Option("--create", help="Accept a customer Dust has not seen yet.")
    ] = False,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move an anonymous store-credit account's balance to the customer (one transaction)."""
    customer = _customer(customer_id)
    if not code.strip() or len(code.strip()) > 40:
        raise fail("CODE must be 1 to 40 characters (e.g. SC-ABCDE-FGHIJ-KLMNO-PQRST)")
    reply = _call(
        CLAIM,
        {"code": code.strip(), "customer_id": customer, "actor": _actor(actor), "create": create},
    )
    if as_json:
        print_json(reply)
        return
    account = reply["account"]
    typer.echo(
        f"claimed {reply['amount']} {account['currency_code']} store credit of {reply['code']}"
        f" for {customer} (entry {reply['entry']['id']}); balance {account['balance']},"
        f" available {account['available']}"
    )


# -- product settings ------------------------------------------------------------------


@products_app.command("set")
def products_set(
    product_id: Annotated[str, typer.Argument(help="The product.")],
    dust_only: Annotated[
        bool | None,
        typer.Option("--dust-only/--no-dust-only", help="Sold for dust only (earns nothing)."),
    ] = None,
    dust_price: Annotated[
        str | None, typer.Option("--dust-price", help="Price in dust (whole number).")
    ] = None,
    clear_dust_price: Annotated[
        bool, typer.Option("--clear-dust-price", help="Remove the dust price.")
    ] = False,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set a product's dust settings (what is not given stays as it is)."""
    product = product_id.strip()
    if not product or len(product) > 200:
        raise fail("PRODUCT_ID must be 1 to 200 characters")
    price = _whole(dust_price, "--dust-price", minimum=0) if dust_price is not None else None
    if price is not None and clear_dust_price:
        raise fail("give --dust-price or --clear-dust-price, not both")
    if dust_only is None and price is None and not clear_dust_price:
        raise fail(
            "nothing to set: give --dust-only/--no-dust-only, --dust-price or --clear-dust-price"
        )
    reply = _call(
        SET_PRODUCT,
        {
            "product_id": product,
            "dust_only": dust_only,
            "dust_price": price,
            "clear_dust_price": clear_dust_price,
            "actor": _actor(actor),
        },
    )
    if as_json:
        print_json(reply)
        return
    row = reply["product"]
    price_text = "none" if row["dust_price"] is None else str(row["dust_price"])
    typer.echo(
        f"{'created' if reply['created'] else 'updated'} {row['product_id']}:"
        f" dust_only={str(row['dust_only']).lower()} dust_price={price_text}"
    )


def _product_json(row: Any) -> dict[str, Any]:
    return {
        "product_id": row.product_id,
        "dust_only": row.dust_only,
        "dust_price": row.dust_price,
        "occurred_at": row.occurred_at.isoformat(),
        "set_by": row.event_id,
        "updated_at": row.updated_at.isoformat(),
    }


@products_app.command("list")
def products_list(
    dust_only: Annotated[
        bool, typer.Option("--dust-only", help="Only dust-only products.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Every product's dust settings."""
    from sqlalchemy import select

    from dust.models import Product
    from dust.worker.db import session_scope

    stmt = select(Product).order_by(Product.product_id)
    if dust_only:
        stmt = stmt.where(Product.dust_only.is_(True))
    with session_scope(read_only=True) as session:
        rows = [_product_json(p) for p in session.scalars(stmt)]
    if as_json:
        print_json(rows)
        return
    table = display.table("product", "dust only", "dust price", "as of", "set by")
    for row in rows:
        table.add_row(
            row["product_id"],
            "yes" if row["dust_only"] else "no",
            "" if row["dust_price"] is None else str(row["dust_price"]),
            row["occurred_at"][:19],
            row["set_by"] or "",
        )
    display.console().print(table)


# -- replays ---------------------------------------------------------------------------


@events_app.command("replay")
def events_replay(
    event_id: Annotated[str | None, typer.Argument(help="One event to replay.")] = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status", help="Replay every event with this status: failed or needs_attention."
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="With --status: only events received since then (ISO 8601)."),
    ] = None,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run events again through the exactly-once path, once their cause is fixed.

    A processed (or ignored, rejected) event is left as it is, and reported as such."""
    if (event_id is None) == (status is None):
        raise fail("give either EVENT_ID or --status failed|needs_attention")
    if status is not None and status not in REPLAYABLE:
        raise fail(f"--status must be failed or needs_attention, got {status!r}")
    if since is not None and status is None:
        raise fail("--since goes with --status")
    since_at = _instant(since, "--since")
    who = _actor(actor)
    ids: Iterator[str] = iter([event_id]) if event_id is not None else _event_ids(status, since_at)
    outcomes: list[dict[str, Any]] = []
    errors = 0
    for current in ids:
        try:
            reply = _call(REPLAY, {"event_id": current, "actor": who})
        except typer.Exit:
            if event_id is not None:
                raise
            errors += 1  # its one line is printed; go on with the others
            outcomes.append({"status": "error", "event_id": current})
            continue
        outcomes.append(reply)
        if not as_json:
            typer.echo(_replay_line(reply))
    if as_json:
        print_json(outcomes if event_id is None else outcomes[0])
    elif event_id is None:
        counts = Counter(o.get("outcome", "error") for o in outcomes)
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to replay"
        typer.echo(f"replayed {len(outcomes)} event(s): {summary}")
    if errors:
        raise typer.Exit(1)
    # Still needs an admin after the replay: not done (resolve it, or fix and replay).
    if any(o.get("outcome") in ("needs_attention", "failed") for o in outcomes):
        raise typer.Exit(1)


def _replay_line(reply: dict[str, Any]) -> str:
    if reply["outcome"] == "unchanged":
        return f"{reply['event_id']}: {reply['reason']}"
    line = f"{reply['event_id']}: {reply['previous']} -> {reply['outcome']}"
    return line + (f" ({reply['reason']})" if reply.get("reason") else "")


def _event_ids(status: str | None, since: datetime | None) -> Iterator[str]:
    """Ids of the events to replay, oldest first, a page at a time (keyset), so events that
    are still in that status after their replay are not picked up twice."""
    from sqlalchemy import and_, or_, select

    from dust.models import Event
    from dust.worker.db import session_scope

    after: tuple[datetime, str] | None = None
    while True:
        stmt = select(Event.received_at, Event.event_id).where(Event.status == status)
        if since is not None:
            stmt = stmt.where(Event.received_at >= since)
        if after is not None:
            stmt = stmt.where(
                or_(
                    Event.received_at > after[0],
                    and_(Event.received_at == after[0], Event.event_id > after[1]),
                )
            )
        stmt = stmt.order_by(Event.received_at, Event.event_id).limit(200)
        with session_scope(read_only=True) as session:
            page = session.execute(stmt).all()
        if not page:
            return
        for _received_at, current in page:
            yield current
        after = (page[-1][0], page[-1][1])


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
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if not file.is_file():
        raise fail(f"{file}: no such file")
    who = _actor(actor)
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
            _forget(result)
        raise
    summary = _finish(backfill_id, total)
    _print_summary(summary, as_json, already=False)


def _open_backfill(
    key: str, path: Path, total: int, actor: str
) -> tuple[int, str, list[tuple[int, int]]]:
    from sqlalchemy import select

    from dust.models import Backfill, BackfillBatch
    from dust.models.base import utcnow
    from dust.worker.db import session_scope

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
    from dust.worker.app import EVENTS_QUEUE
    from dust.worker.app import app as celery

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
    from celery.exceptions import TimeoutError as ReplyTimeout

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
        _forget(result)
    if not isinstance(reply, dict) or reply.get("status") != "ok":
        reason = reply.get("reason") if isinstance(reply, dict) else repr(reply)
        raise fail(f"{where}: {reason}; run the same command again to resume")
    return batch.line_count


def _finish(backfill_id: int, total: int) -> dict[str, Any]:
    """Mark the backfill finished and add up what its batches did."""
    from sqlalchemy import select

    from dust.models import Backfill, BackfillBatch
    from dust.models.base import utcnow
    from dust.worker.db import session_scope

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


# -- export ----------------------------------------------------------------------------

EXPORT_COLUMNS = [
    "id",
    "created_at",
    "customer_id",
    "kind",
    "currency_code",
    "direction",
    "amount",
    "balance_after",
    "reason",
    "reference_type",
    "reference_id",
    "event_id",
    "actor",
    "memo",
]


@app.command()
def export(
    customer: Annotated[str | None, typer.Option("--customer", help="Only this customer.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Entries created at or after (ISO 8601).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Entries created before (ISO 8601).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Entries as CSV, oldest first, streamed from the database (constant memory)."""
    from sqlalchemy import select

    from dust.models import Account, Entry
    from dust.worker.db import session_scope

    since_at, until_at = _instant(since, "--since"), _instant(until, "--until")
    if since_at and until_at and since_at >= until_at:
        raise fail("--since must be before --until")
    customer_id = _customer(customer) if customer is not None else None
    stmt = (
        select(
            Entry.id,
            Entry.created_at,
            Account.customer_id,
            Account.kind,
            Account.currency_code,
            Entry.direction,
            Entry.amount,
            Entry.balance_after,
            Entry.reason,
            Entry.reference_type,
            Entry.reference_id,
            Entry.event_id,
            Entry.actor,
            Entry.memo,
        )
        .join(Account, Account.id == Entry.account_id)
        .order_by(Entry.id)
    )
    if customer_id is not None:
        stmt = stmt.where(Account.customer_id == customer_id)
    if since_at is not None:
        stmt = stmt.where(Entry.created_at >= since_at)
    if until_at is not None:
        stmt = stmt.where(Entry.created_at < until_at)
    partial = output.with_name(output.name + ".partial") if output is not None else None
    with session_scope(read_only=True) as session:
        known = select(Account.id).where(Account.customer_id == customer_id).limit(1)
        if customer_id is not None and session.scalar(known) is None:
            raise fail(f"unknown customer {customer_id} (no accounts)")
        try:
            handle: IO[str] = (
                partial.open("w", newline="", encoding="utf-8") if partial else sys.stdout
            )
        except OSError as exc:
            raise fail(f"cannot write {output}: {exc.strerror}") from None
        try:
            # Core rows through a server-side cursor (psycopg) / a lazy cursor (SQLite):
            # memory stays constant, and no ORM identity map fills up.
            stream = stmt.execution_options(stream_results=True, max_row_buffer=2000)
            count = _write_csv(handle, session.connection().execute(stream))
        except BrokenPipeError:  # e.g. `dust export | head`: the reader has what it wanted
            _quiet_stdout()
            raise typer.Exit(0) from None
        except BaseException:
            if partial is not None:
                handle.close()
                partial.unlink(missing_ok=True)
            raise
        if partial is not None:
            handle.close()
    if output is not None and partial is not None:
        partial.replace(output)
        typer.echo(f"exported {count} entries to {output}", err=True)


def _quiet_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the exit flush does not fail."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _write_csv(handle: IO[str], rows: Any) -> int:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    for row in rows:
        values = list(row)
        values[1] = values[1].isoformat()
        writer.writerow(["" if value is None else value for value in values])
        count += 1
    handle.flush()
    return count
