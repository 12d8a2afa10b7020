"""Exactly-once in effect: the inbox row and the event's entries commit together.

``process(raw)`` parses the envelope, then in one transaction claims its id by inserting
the inbox row (``INSERT … ON CONFLICT DO NOTHING``). An id already there is a duplicate
(a no-op) when the content is the same, a ``conflict`` (recorded) when it is not. A new
id runs its subscriber inside a savepoint and records the outcome on the row. A subscriber
that rejects the event has its writes rolled back to the savepoint, so bad input is never
half-applied. A concurrent delivery of the same id waits on the uncommitted row, then finds
it. ``process_batch(raws)`` does the same for many envelopes in few transactions (the
worker's batches, ``runtime/batching.py``). Each transaction first locks the rows its
envelopes touch that exist, in id order; the batch's first one skips the rows another
transaction holds and leaves the envelopes that touch them to the next (``_held_up``).
In it, envelopes of a subscriber in ``BULK_SUBSCRIBERS`` that touch nothing an earlier
envelope touches go first (``_apply_first``), and consecutive ones go together,
set-based (``_apply_bulk``): the subscriber's writes, then all their inbox rows in one
``INSERT … ON CONFLICT DO NOTHING``, in one savepoint rolled back whole if any id turns
out to be there already; those envelopes then go one at a time as above. Consecutive
envelopes of the other subscribers in ``TOUCHES`` (orders that charge, refunds, cancels,
customers) go together too (``_apply_run``): their rows read together; then each event's
subscriber as one at a time, in one savepoint for all of them (a rejected event rolls it
back, and the events up to it go one at a time); then their inbox rows in one INSERT.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from time import monotonic
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dust.ledger import journal
from dust.ledger.accounts import forget_locks
from dust.ledger.orders import EarnPolicy
from dust.models import Event, EventConflict
from dust.models.base import insert_for, utcnow
from dust.models.bulk import insert_rows
from dust.subscribers import (
    BULK_CANDIDATES,
    BULK_SUBSCRIBERS,
    SUBSCRIBERS,
    TOUCHES,
    Locked,
    batch_keys,
    end_run,
    goes_first,
    lock_first,
    lock_run,
)
from dust.subscribers.base import Context, Envelope, Outcome, Rejected, Touches
from dust.worker.db import session_scope
from dust.worker.errors import is_transient, retry_conflicts, safe_message, scrub  # noqa: F401
from dust.worker.send_later import SEND_LATER
from dust.worker.settings import Settings, get_settings

MAX_ID = 250
MAX_NAME = 100
MAX_ENVELOPE_BYTES = 1_000_000
#: Deepest nesting of objects and arrays in an envelope (the envelope itself is level 1;
#: a real one needs 5). Deeper is refused here, before it is batched: pickling it for the
#: pool, printing or hashing it could exhaust Python's recursion limit.
MAX_DEPTH = 32
#: ``occurred_at`` outside this window is refused: lot and hold expiries are computed from
#: it, and they must stay representable dates (the longest TTL is 100 years).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
#: Control characters (NUL above all: PostgreSQL text cannot hold it) in ids and names.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Statuses after which a redelivery is a no-op; ``failed`` is retried on redelivery,
#: ``needs_attention`` only by an explicit replay.
FINAL = {"processed", "ignored", "rejected", "needs_attention"}
#: Results of a delivery that applied nothing.
NOT_APPLIED = {"duplicate", "conflict"}


@dataclass
class Parsed:
    event_id: str
    name: str
    content_hash: str
    text: str
    envelope: Envelope | None = None
    error: str | None = None


@dataclass
class Result:
    event_id: str
    status: str  # processed | ignored | rejected | needs_attention | duplicate | conflict
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    #: The event's name and occurred_at, for metrics and logs (set by process/process_batch).
    name: str = "?"
    occurred_at: datetime | None = None


@dataclass(frozen=True)
class Malformed:
    """A message that is not ``dust.handle_event(envelope)``: recorded ``rejected``."""

    body: Any
    reason: str


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_envelope(raw: Any, received_at: datetime) -> Parsed:
    """Turn whatever arrived into a :class:`Parsed`; never raises for bad input. A
    :class:`Parsed` is taken as it is (the worker's verdict on an envelope it refused
    before batching, ``runtime/batching.py``)."""
    if isinstance(raw, Parsed):
        return raw
    if isinstance(raw, Malformed):
        try:
            text = canonical(raw.body)
        except (TypeError, ValueError, RecursionError):
            text = _safe_repr(raw.body)
        return _bad(text, None, raw.reason)
    if isinstance(raw, str | bytes):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        try:
            raw = json.loads(text)
        # ValueError besides JSONDecodeError: an integer too long to convert.
        except (ValueError, RecursionError) as exc:
            msg = getattr(exc, "msg", None) or (
                "too deeply nested" if isinstance(exc, RecursionError) else str(exc)[:100]
            )
            return _bad(text, None, f"invalid JSON: {msg}")
    if too_deep(raw):
        return _too_deep(raw)
    try:
        text = canonical(raw)
    except (TypeError, ValueError, RecursionError):
        return _bad(_safe_repr(raw), None, "envelope is not JSON data")
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        return _bad(text, None, "envelope holds a lone surrogate: not valid Unicode text")
    if size > MAX_ENVELOPE_BYTES:
        return _bad(text, None, f"envelope larger than {MAX_ENVELOPE_BYTES} bytes")
    if not isinstance(raw, dict):
        return _bad(text, None, "envelope must be a JSON object")
    name, data, given_id = raw.get("name"), raw.get("data"), raw.get("id")
    event_id = given_id
    if event_id is None and isinstance(name, str) and isinstance(data, dict):
        data_id = data.get("id")
        if isinstance(data_id, str) and data_id:
            event_id = f"{name}:{data_id}"
    if not _is_label(event_id, MAX_ID) or event_id != event_id.strip():
        problem = (
            "id must be a non-empty string of at most 250 characters, no control characters,"
            " no whitespace at either end (ids are taken as sent)"
        )
        if given_id is None:
            problem = "no id, and none can be derived from name and data.id"
        return _bad(text, name if isinstance(name, str) else None, problem)
    if not _is_label(name, MAX_NAME):
        return _bad(
            text,
            None,
            "name must be a non-empty string of at most 100 characters, no control characters",
            event_id,
        )
    if not isinstance(data, dict):
        return _bad(text, name, "data must be a JSON object", event_id)
    occurred_at = received_at
    if raw.get("occurred_at") is not None:
        occurred_at_or_error = _parse_instant(raw["occurred_at"])
        if isinstance(occurred_at_or_error, str):
            return _bad(text, name, occurred_at_or_error, event_id)
        occurred_at = occurred_at_or_error
    envelope = Envelope(event_id, name, occurred_at, data)
    return Parsed(event_id, name, _hash(text), text, envelope)


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests objects and arrays more than ``limit`` levels deep; walked
    without recursion, so any depth is measured safely."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if level > limit:
            return True
        stack.extend(
            (child, level + 1) for child in children if isinstance(child, dict | list | tuple)
        )
    return False


def _too_deep(raw: Any) -> Parsed:
    """A rejected envelope nested too deep: recorded under its own id when it has one."""
    try:
        text = canonical(raw)
    except (TypeError, ValueError, RecursionError):
        text = f"<{type(raw).__name__} nested more than {MAX_DEPTH} levels deep>"
    given = raw.get("id") if isinstance(raw, dict) else None
    name = raw.get("name") if isinstance(raw, dict) else None
    event_id = given if _is_label(given, MAX_ID) and given == given.strip() else None
    reason = f"envelope nested more than {MAX_DEPTH} levels deep"
    return _bad(text, name if isinstance(name, str) else None, reason, event_id)


def _parse_instant(value: Any) -> datetime | str:
    if not isinstance(value, str) or len(value) > 64:
        return "occurred_at must be an ISO 8601 string with an offset"
    try:
        instant = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return f"occurred_at is not ISO 8601: {value!r}"
    if instant.tzinfo is None:
        return "occurred_at needs a UTC offset (e.g. 2026-11-20T10:00:00Z)"
    try:
        instant = instant.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first representable day
        instant = EARLIEST - timedelta(days=1)
    if not EARLIEST <= instant < LATEST:
        return f"occurred_at out of range ({EARLIEST.year} to {LATEST.year}): {value!r}"
    return instant


def _is_label(value: Any, max_length: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= max_length and CONTROL.search(value) is None


def _safe_repr(raw: Any) -> str:
    try:
        return repr(raw)[:MAX_ENVELOPE_BYTES]
    except ValueError:  # e.g. an int too long to print
        return f"<{type(raw).__name__} that cannot be shown>"


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _bad(text: str, name: str | None, error: str, event_id: str | None = None) -> Parsed:
    """A rejected envelope, with what is stored of it made storable: lone surrogates and NUL
    escaped (PostgreSQL text holds neither), a name with control characters dropped."""
    digest = _hash(text)
    storable = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")
    storable = storable[:MAX_ENVELOPE_BYTES]
    if not _is_label(name, MAX_NAME):
        name = "?"
    return Parsed(event_id or f"invalid:{digest[:32]}", name, digest, storable, error=error)


def context_from(settings: Settings) -> Context:
    return Context(
        earn_rate=settings.rate_for,
        redeem_value=settings.redeem_for,
        policy=EarnPolicy(
            settings.points_ttl_days,
            settings.clawback_policy,
            pending_days=settings.pending_days,
            max_multiplier=settings.max_earn_multiplier,
        ),
        default_currency=settings.default_currency,
        hold_ttl_seconds=settings.hold_ttl_seconds,
        currencies=settings.currencies,
    )


def request_context() -> dict[str, Any]:
    """The validation context of a request or admin task's arguments (known currencies)."""
    return {"currencies": get_settings().currencies}


# -- the exactly-once path -------------------------------------------------------------


def process(raw: Any, *, replay: bool = False, context: Context | None = None) -> Result:
    """Apply one envelope exactly once in effect. Transient errors propagate (after a few
    quick retries) for the caller to retry later; bad input never raises."""
    parsed = parse_envelope(raw, utcnow())
    context = context or context_from(get_settings())
    result = retry_conflicts(_apply)(parsed, context, replay)
    _describe(result, parsed)
    return result


#: Longest a batch's transaction goes on taking events (seconds): row locks (an account,
#: an inbox id a concurrent duplicate waits on) are held until the commit.
BATCH_TRANSACTION_SECONDS = 0.25


def process_batch(
    raws: list[Any],
    *,
    context: Context | None = None,
    on_commit: Callable[[list[Result]], None] | None = None,
) -> list[Result]:
    """Apply many envelopes, each exactly once in effect (a duplicate within the batch is a
    duplicate as across batches), in as few transactions as keep each under
    ``BATCH_TRANSACTION_SECONDS``: in order, but for envelopes that touch nothing the
    envelopes they overtake touch: those that go first (``_apply_first``), and, in the
    first transaction, those left for the next because another transaction holds a row
    that they or envelopes joined to them touch (``_apply_some``). Any error rolls back
    the open transaction and propagates (after a few quick retries of a transient one);
    what committed before stays, and the caller applies the envelopes one by one with
    :func:`process` (those are duplicates). ``on_commit(results)`` is called after each
    transaction's commit with its results. Returns the results in the order of ``raws``."""
    received_at = utcnow()
    parsed = [parse_envelope(raw, received_at) for raw in raws]
    context = context or context_from(get_settings())
    results: list[Result | None] = [None] * len(parsed)
    pending = list(range(len(parsed)))  # not yet committed, in the batch's order
    wait = False  # the first transaction waits for no row another one holds
    while pending:
        done = retry_conflicts(_apply_some)([parsed[i] for i in pending], context, wait)
        wait = True  # the next ones do: each takes at least one envelope
        committed: list[Result] = []
        for at, result in sorted(done.items()):
            _describe(result, parsed[pending[at]])
            results[pending[at]] = result
            committed.append(result)
        pending = [i for at, i in enumerate(pending) if at not in done]
        if on_commit is not None and committed:
            on_commit(committed)
    return [result for result in results if result is not None]


def _describe(result: Result, parsed: Parsed) -> None:
    result.name = parsed.name
    result.occurred_at = parsed.envelope.occurred_at if parsed.envelope else None


def _apply(parsed: Parsed, context: Context, replay: bool) -> Result:
    with session_scope() as session:
        return _apply_in(session, parsed, context, replay)


#: An applied event's ``processed_at`` is at most this long before its transaction commits
#: (seconds): rows stamped earlier in a batch's transaction are stamped again at its end.
STAMP_SLACK = 0.005


def _apply_some(parsed: list[Parsed], context: Context, wait: bool = True) -> dict[int, Result]:
    """One transaction: some of ``parsed``, until time is up; at least one when ``wait``.
    Its rows locked first (``_lock_first``); without ``wait``, those another transaction
    holds are skipped, and the envelopes that touch them, or are joined to those that do,
    are left out (``_held_up``). Of the others, first those that may go set-based ahead
    (``_apply_first``), then the rest in their order. Returns their results by their
    place in ``parsed``."""
    stamped: list[tuple[str, float]] = []  # applied events, when their row was written
    deadline = monotonic() + BATCH_TRANSACTION_SECONDS
    one_at_a_time_until = 0
    with session_scope() as session:
        locked = _lock_first(session, parsed, wait)
        held = _held_up(parsed, locked)
        mine = [at for at in range(len(parsed)) if at not in held]
        first, alone = _apply_first(session, [parsed[at] for at in mine], locked.orders, context)
        done = {mine[at]: result for at, result in first.items()}
        alone = {mine[at] for at in alone}
        now = monotonic()
        stamped += [(r.event_id, now) for r in done.values() if r.status not in NOT_APPLIED]
        places = [at for at in mine if at not in done]
        rest = [parsed[at] for at in places]
        start = 0
        while start < len(rest) and (start == 0 or monotonic() < deadline):
            results: list[Result] = []
            if start >= one_at_a_time_until and places[start] not in alone:
                results, declined = _apply_next(session, rest, start, context)
                one_at_a_time_until = start + declined
            if not results:
                results = [_apply_in(session, rest[start], context, False)]
            done.update(zip(places[start:], results, strict=False))
            start += len(results)
            now = monotonic()
            stamped += [(r.event_id, now) for r in results if r.status not in NOT_APPLIED]
        stale = [event_id for event_id, at in stamped if monotonic() - at > STAMP_SLACK]
        if stale:
            session.execute(
                update(Event)
                .where(Event.event_id.in_(stale))
                .values(processed_at=utcnow())
                .execution_options(synchronize_session=False, **{SEND_LATER: True})
            )  # sent with the COMMIT (worker/send_later.py)
    return done


def _lock_first(session: Session, parsed: list[Parsed], wait: bool) -> Locked:
    """The rows all of ``parsed`` touch that exist, locked before any is applied
    (``subscribers.lock_first``): one lock order for the whole transaction. Without
    ``wait``, rows another transaction holds are skipped, on PostgreSQL, when no product
    event is among them (what follows one may earn otherwise: nothing after it may be
    left out), and when some event is not for the set-based path (``goes_first``): a batch
    of new orders and customers only is over in a few statements, so waiting for it costs
    less than the second transaction the events left out would take."""
    if len(parsed) < 2:
        return Locked()  # one event locks in one order already
    envelopes = [one.envelope for one in parsed if one.envelope is not None]
    if not wait:
        wait = (
            session.get_bind().dialect.name != "postgresql"
            or any(batch_keys(e, {}) is None for e in envelopes)
            or all(goes_first(e, ()) for e in envelopes)
        )
    return lock_first(session, envelopes, wait=wait)


def _held_up(parsed: list[Parsed], locked: Locked) -> set[int]:
    """The places of the envelopes of ``parsed`` that touch a row another transaction
    holds (``locked.busy``), or are joined to one that does (they share an order, a
    customer, a cart or an event id, directly or through others): left to a later
    transaction, they keep their order among themselves, and the others touch nothing
    they touch."""
    if not locked.busy:
        return set()
    joined = _Joined()
    keys: list[set[str]] = []
    for one in parsed:
        mine = {f"event:{one.event_id}"}
        if one.envelope is not None:
            mine |= batch_keys(one.envelope, locked.orders) or set()
        joined.join(mine, None)
        keys.append(mine)
    held = {joined.group(key) for key in locked.busy if key in joined}
    return {at for at, mine in enumerate(keys) if joined.group(next(iter(mine))) in held}


def _apply_first(
    session: Session, parsed: list[Parsed], orders: dict[str, str | None], context: Context
) -> tuple[dict[int, Result], set[int]]:
    """Apply set-based, ahead of the others, the envelopes of ``parsed`` that a bulk
    subscriber may take (``goes_first``: new orders that charge nothing, new customers),
    that no product event precedes, that share their event id with no envelope before
    them, and that are joined to no envelope before them but those going first with the
    same subscriber. Two envelopes are joined when they share an order, a customer or a
    cart (``batch_keys``), directly or through others before them (a cancel of an order
    placed earlier in the batch is joined to its customer through the order.placed).
    Those going first keep their order, one subscriber's after the other's (they share
    nothing). Each touches rows that none of the envelopes it overtakes touches, so every
    account gets the same entries in the same order as one at a time; in a store's mixed
    stream most new orders then go set-based, not one at a time between a charge and a
    refund. From the first a subscriber declines on, its envelopes stay in their place.
    Returns the results of those applied, by their place in ``parsed``, and the places of
    those declined that must go one at a time (``_apply_bulk``)."""
    first: dict[str, list[int]] = {}  # by name: one bulk subscriber each
    joined = _Joined()
    ids: set[str] = set()
    for at, one in enumerate(parsed):
        envelope = one.envelope
        keys = set() if envelope is None else batch_keys(envelope, orders)
        if keys is None:
            break  # what comes after it may earn otherwise
        goes = (
            envelope is not None
            and one.event_id not in ids
            and joined.owners(keys) <= {one.name}
            and goes_first(envelope, orders)
        )
        if goes:
            first.setdefault(one.name, []).append(at)
        joined.join(keys, one.name if goes else None)
        ids.add(one.event_id)
    done: dict[int, Result] = {}
    alone: set[int] = set()
    for places in first.values():
        while places:
            results, declined = _apply_bulk(
                session, [parsed[at] for at in places[:MAX_BULK_RUN]], context
            )
            if not results:
                alone.update(places[:declined])  # one at a time, in their place
                break  # and those after them in their place
            done.update(zip(places, results, strict=False))
            places = places[len(results) :]
    return done, alone


class _Joined:
    """The keys of a batch's envelopes, joined when one envelope names them together
    (union-find); each group owned by the subscriber all its envelopes go first with, or
    by None."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._owner: dict[str, str | None] = {}  # of each group's root

    def __contains__(self, key: str) -> bool:
        return key in self._parent

    def group(self, key: str) -> str:
        """The group of a key seen before (its root)."""
        root = key
        while (up := self._parent[root]) != root:
            root = up
        while key != root:  # shorten the path for the next lookup
            self._parent[key], key = root, self._parent[key]
        return root

    def owners(self, keys: set[str]) -> set[str | None]:
        """Who owns the groups of those of ``keys`` seen before."""
        return {self._owner[self.group(k)] for k in keys if k in self._parent}

    def join(self, keys: set[str], owner: str | None) -> None:
        """Put ``keys`` and their groups in one group, owned by ``owner``."""
        if not keys:
            return
        roots = {self.group(k) for k in keys if k in self._parent}
        top = next(iter(roots)) if roots else next(iter(keys))
        for key in keys - self._parent.keys():
            self._parent[key] = top
        for root in roots:
            self._parent[root] = top
        self._parent.setdefault(top, top)
        self._owner[top] = owner


#: Most events one set-based run of ``_apply_bulk`` takes.
MAX_BULK_RUN = 500
#: Fewest events the set-based path may take together for it to go first: a shorter run
#: of them (a store's mixed stream) goes in a run of ``_apply_run`` with its neighbours.
MIN_BULK_RUN = 8


def _apply_next(
    session: Session, parsed: list[Parsed], start: int, context: Context
) -> tuple[list[Result], int]:
    """The envelopes from ``start`` on applied together, if they may be: set-based
    (``_apply_bulk``) when at least ``MIN_BULK_RUN`` are for it, else in a run
    (``_apply_run``), else, when only one is for it, set-based. Returns their results, or
    none and how many envelopes must go one at a time."""
    bulk = _bulk_run(parsed, start)
    if bulk and _candidates(parsed, start) >= MIN_BULK_RUN:
        results, declined = _apply_bulk(session, bulk, context)
        if declined == 1 and (run := _run_of(parsed, start, context, first=True)):
            # Not for the set-based path, though of its subscriber: run with the rest.
            return _apply_run(session, run, context)
        return results, declined
    if run := _run_of(parsed, start, context):
        return _apply_run(session, run, context)
    if bulk:
        return _apply_bulk(session, bulk, context)
    return [], 1


def _candidates(parsed: list[Parsed], start: int) -> int:
    """How many envelopes from ``start`` on the set-based path may take together (at most
    ``MIN_BULK_RUN`` counted): of one bulk subscriber, each one it may take."""
    first = parsed[start]
    count = 0
    for one in parsed[start : start + MIN_BULK_RUN]:
        if one.envelope is None or one.name != first.name or one.name not in BULK_SUBSCRIBERS:
            break
        candidate = BULK_CANDIDATES.get(one.name)
        if candidate is not None and not candidate(one.envelope):
            break
        count += 1
    return count


def _bulk_run(parsed: list[Parsed], start: int) -> list[Parsed]:
    """The envelopes from ``start`` on that a bulk subscriber may take together: all of
    one name, no id twice (one alone too: the set-based path has fewer round trips).
    Empty when the envelope at ``start`` is not for a bulk subscriber."""
    first = parsed[start]
    if first.envelope is None or first.name not in BULK_SUBSCRIBERS:
        return []
    run: list[Parsed] = []
    ids: set[str] = set()
    for one in parsed[start : start + MAX_BULK_RUN]:
        if one.envelope is None or one.name != first.name or one.event_id in ids:
            break
        run.append(one)
        ids.add(one.event_id)
    return run


def _apply_bulk(session: Session, run: list[Parsed], context: Context) -> tuple[list[Result], int]:
    """Apply the first envelopes of ``run`` set-based, as many as the subscriber takes, in
    a savepoint: their outcomes are known first, then the subscriber writes, then their
    inbox rows go in one INSERT. Returns their results; or, with nothing written, none and
    how many envelopes must go one at a time: the first, when the subscriber takes none;
    all it took, when the database refused them (an order or an id there already)."""
    envelopes = [one.envelope for one in run if one.envelope is not None]
    prepared = BULK_SUBSCRIBERS[run[0].name](session, envelopes, context)
    if prepared is None:
        return [], 1
    taken = run[: len(prepared.outcomes)]
    savepoint = session.begin_nested()
    if prepared.apply(session):
        rows = _processed_rows(taken, prepared.outcomes)
        table = Event.__table__
        claimed = insert_rows(session, table, rows, skip_conflicts=True, returning="event_id")
        if len(claimed) == len(rows):
            savepoint.commit()
            results = [
                Result(one.event_id, outcome.status, outcome.reason, outcome.detail)
                for one, outcome in zip(taken, prepared.outcomes, strict=True)
            ]
            return results, 0
    savepoint.rollback()
    forget_locks(session)  # locks taken inside the savepoint went with it
    return [], len(taken)


#: Most events one run of ``_apply_run`` takes: its order rows and accounts stay locked
#: until the transaction commits.
MAX_RUN = 64


@dataclass(frozen=True)
class _Run:
    events: list[Parsed]
    touched: list[Touches]


def _run_of(
    parsed: list[Parsed], start: int, context: Context, *, first: bool = False
) -> _Run | None:
    """The envelopes from ``start`` on that ``_apply_run`` may take together: of
    subscribers in ``TOUCHES``, valid payloads, no id twice, up to where at least
    ``MIN_BULK_RUN`` for the set-based path follow one another (``first``: the one at
    ``start`` was declined by it). None when there are fewer than two (one alone gains
    nothing)."""
    events: list[Parsed] = []
    touched: list[Touches] = []
    ids: set[str] = set()
    for i, one in enumerate(parsed[start : start + MAX_RUN]):
        envelope = one.envelope
        if envelope is None or one.event_id in ids or one.name not in TOUCHES:
            break
        if not (first and i == 0) and _candidates(parsed, start + i) >= MIN_BULK_RUN:
            break
        touches = TOUCHES[one.name](envelope, context)
        if touches is None:
            break  # its handler rejects it, one at a time
        events.append(one)
        touched.append(touches)
        ids.add(one.event_id)
    if len(events) < 2:
        return None
    return _Run(events, touched)


def _apply_run(session: Session, run: _Run, context: Context) -> tuple[list[Result], int]:
    """Apply the envelopes of ``run`` as one at a time, in one savepoint: their order rows
    locked together (``dust.ledger.orders.lock_orders``), then the dust accounts of the orders'
    and events' customers (one statement each, in id order); then each subscriber in
    turn, without a savepoint of its own; then their inbox rows in one INSERT. Returns
    their results; or, with nothing written, none and how many envelopes must go one at a
    time: those up to the first already in the inbox, or up to the first rejected, or
    all when the inbox refused one of their ids (a concurrent delivery)."""
    events = run.events
    ids = [one.event_id for one in events]
    known = set(session.scalars(select(Event.event_id).where(Event.event_id.in_(ids))))
    if known:
        return [], next(i for i, event_id in enumerate(ids) if event_id in known) + 1
    savepoint = session.begin_nested()
    outcomes: list[Outcome] = []
    with journal.deferred(session):
        try:
            lock_run(session, run.touched)
            for i, one in enumerate(events):
                assert one.envelope is not None
                try:
                    outcomes.append(SUBSCRIBERS[one.name](session, one.envelope, context))
                except Rejected:
                    savepoint.rollback()
                    forget_locks(session)  # locks taken inside the savepoint went with it
                    return [], i + 1
        finally:
            end_run(session)
        journal.flush_deferred(session)  # the run's writes, a few statements
    rows = _processed_rows(events, outcomes)
    claimed = insert_rows(session, Event.__table__, rows, skip_conflicts=True, returning="event_id")
    if len(claimed) != len(rows):
        savepoint.rollback()
        forget_locks(session)
        return [], len(events)
    savepoint.commit()
    results = [
        Result(one.event_id, outcome.status, outcome.reason, outcome.detail)
        for one, outcome in zip(events, outcomes, strict=True)
    ]
    return results, 0


def _apply_in(session: Session, parsed: Parsed, context: Context, replay: bool) -> Result:
    # Claim the id: a new id is inserted at once (one round trip); a concurrent delivery
    # of the same id waits here on the row until this transaction ends, then finds it.
    claimed = _insert_event(session, parsed, "processed")
    if claimed is None:
        row = session.get(Event, parsed.event_id, with_for_update=True)
        assert row is not None, "an inbox row vanished"
        if row.content_hash != parsed.content_hash:
            _record_conflict(session, parsed)
            return Result(
                parsed.event_id, "conflict", f"id {parsed.event_id} was used by other content"
            )
        rerun = row.status == "failed" or (replay and row.status == "needs_attention")
        if not rerun:
            return Result(parsed.event_id, "duplicate", row.status)
        row.attempts += 1
    outcome = _run(session, parsed, context)
    session.execute(
        update(Event)
        .where(Event.event_id == parsed.event_id)
        .values(
            status=outcome.status,
            reason=outcome.reason,
            detail=canonical(outcome.detail) if outcome.detail else None,
            occurred_at=parsed.envelope.occurred_at if parsed.envelope else None,
            processed_at=utcnow(),
        )
        .execution_options(synchronize_session="fetch" if claimed is None else False)
    )
    return Result(parsed.event_id, outcome.status, outcome.reason, outcome.detail)


def _insert_event(session: Session, parsed: Parsed, status: str, **fields: Any) -> str | None:
    """Insert the inbox row of ``parsed`` unless its id is there already; the id when this
    call inserted it, None when it was there (or is being inserted by a transaction that
    has not ended: the statement waits for it)."""
    return session.execute(
        insert_for(session)(Event)
        .values(**_event_row(parsed, status, utcnow(), **fields))
        .on_conflict_do_nothing()
        .returning(Event.event_id)
    ).scalar()


def _processed_rows(events: Sequence[Parsed], outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """The inbox rows of envelopes whose subscriber ran, one per outcome, processed now."""
    now = utcnow()
    return [
        _event_row(
            one,
            outcome.status,
            now,
            reason=outcome.reason,
            detail=canonical(outcome.detail) if outcome.detail else None,
            occurred_at=one.envelope.occurred_at if one.envelope else None,
            processed_at=now,
        )
        for one, outcome in zip(events, outcomes, strict=True)
    ]


def _event_row(parsed: Parsed, status: str, received_at: datetime, **fields: Any) -> dict[str, Any]:
    """The columns of a new inbox row for ``parsed``."""
    return {
        "event_id": parsed.event_id,
        "name": parsed.name,
        "content_hash": parsed.content_hash,
        "envelope": parsed.text,
        "status": status,
        "received_at": received_at,
        "attempts": 1,
        **fields,
    }


def _run(session: Session, parsed: Parsed, context: Context) -> Outcome:
    if parsed.error is not None or parsed.envelope is None:
        return Outcome("rejected", parsed.error)
    handler = SUBSCRIBERS.get(parsed.name)
    if handler is None:
        return Outcome("ignored", f"no subscriber for {parsed.name!r}")
    try:
        with session.begin_nested():
            return handler(session, parsed.envelope, context)
    except Rejected as exc:
        forget_locks(session)  # locks taken inside the savepoint went with it
        return Outcome("rejected", str(exc))


def _record_conflict(session: Session, parsed: Parsed) -> None:
    insert = insert_for(session)
    session.execute(
        insert(EventConflict)
        .values(
            event_id=parsed.event_id,
            content_hash=parsed.content_hash,
            envelope=parsed.text,
            received_at=utcnow(),
        )
        .on_conflict_do_nothing()
    )


def record_failed(raw: Any, error: BaseException) -> None:
    """Retries ran out: record the event as ``failed`` (replayable) with the error's kind."""
    parsed = parse_envelope(raw, utcnow())
    reason = f"{type(error).__name__}: {safe_message(error)}"
    with session_scope() as session:
        if _insert_event(session, parsed, "failed", reason=reason) is not None:
            return
        row = session.get(Event, parsed.event_id, with_for_update=True)
        if row is not None and row.status == "failed":
            row.reason = reason
            row.attempts += 1


def record_undecodable(body: Any, content_type: str | None, error: BaseException) -> str:
    """A message whose body is not valid JSON: recorded ``rejected`` with the reason (its
    id derived from the body, so a redelivery records nothing new). Returns the event id."""
    if isinstance(body, bytes | bytearray | memoryview):
        text = bytes(body).decode("utf-8", "backslashreplace")
    else:
        text = str(body)
    cause = error.__cause__ or error.__context__ or error
    detail = getattr(cause, "msg", None) or safe_message(cause)
    problem = f"({type(cause).__name__}: {detail[:200]})"
    if content_type in (None, "", "application/json"):
        reason = f"message body is not valid JSON {problem}"
    else:  # a signed message (application/data) whose signature does not verify, ...
        reason = f"message body of type {content_type[:100]} could not be decoded {problem}"
    parsed = _bad(text, None, reason)
    with session_scope() as session:
        _insert_event(session, parsed, "rejected", reason=reason, processed_at=utcnow())
    return parsed.event_id


def status_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Event.status, func.count()).group_by(Event.status)).all()
    return {status: count for status, count in rows}
