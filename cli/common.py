"""What every command group of ``dust`` shares: output, refusals, validation of
operator input, and the round trip of an admin request to a worker."""

from __future__ import annotations

import getpass
import json
import re
from datetime import datetime
from typing import Annotated, Any

import typer
from celery.exceptions import TimeoutError as ReplyTimeout
from sqlalchemy.engine import make_url

from dust.cli import display
from dust.worker.app import REQUESTS_QUEUE
from dust.worker.app import app as celery
from dust.worker.currencies import problem as currency_problem
from dust.worker.errors import safe_message, scrub
from dust.worker.instants import NotAnInstant, parse_instant
from dust.worker.names import MAX_ACTOR, MAX_AMOUNT, MAX_ID
from dust.worker.settings import get_settings

console = display.console()
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear line and return the exit to raise."""
    typer.echo(f"dust: {message}", err=True)
    return typer.Exit(code)


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def actor_option(actor: str | None) -> str:
    return actor or getpass.getuser()


def safe_url(url: str) -> str:

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse (a broker's): scrub it by hand
        return scrub(url)


#: How long a command waits for a worker's reply to an admin request.
REPLY_TIMEOUT = 60.0

ActorOption = Annotated[
    str | None,
    typer.Option("--actor", help="Who is doing this (default: the operating-system user)."),
]


# -- shared helpers --------------------------------------------------------------------


def actor(actor: str | None) -> str:
    if actor is not None:
        if not actor.strip():
            raise fail("--actor must not be empty")
        if len(actor.strip()) > MAX_ACTOR:
            raise fail(f"--actor is longer than {MAX_ACTOR} characters")
        return actor.strip()
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (e.g. a bare container uid)
        raise fail("cannot tell which user is running this; give --actor NAME") from None


def whole(value: str, what: str, *, minimum: int) -> int:
    text = value.strip()
    if not re.fullmatch(r"[0-9]+", text):
        raise fail(f"{what} must be a whole number, got {value!r}")
    number = int(text)
    if number < minimum:
        raise fail(f"{what} must be at least {minimum}, got {number}")
    if number > MAX_AMOUNT:
        raise fail(f"{what} must be at most {MAX_AMOUNT}, got {number}")
    return number


def customer(customer_id: str) -> str:
    text = customer_id.strip()
    if not text or len(text) > MAX_ID:
        raise fail(f"CUSTOMER_ID must be 1 to {MAX_ID} characters")
    return text


def kind_and_currency(
    kind: str | None, currency: str | None, missing: str
) -> tuple[str, str | None]:
    """``--kind`` and ``--currency`` of an adjustment, checked together: dust has no
    currency, store credit needs a known one. ``missing`` starts the error without a kind."""
    if kind is None:
        raise fail(f"{missing}: dust or store_credit")
    kind = kind.strip().lower()
    if kind not in ("dust", "store_credit"):
        raise fail(f"--kind must be dust or store_credit, got {kind!r}")
    if kind == "store_credit":
        if currency is None:
            raise fail("--currency is required for store_credit (e.g. --currency usd)")
        if (why := currency_problem(currency.strip(), get_settings().currencies)) is not None:
            raise fail(f"--currency: {why}")
        return kind, currency.strip().lower()
    if currency is not None:
        raise fail("--currency is only for --kind store_credit (dust has no currency)")
    return kind, None


def instant(value: str | None, option: str) -> datetime | None:
    """The instant an option names (``worker/instants.py``: a date, or an ISO 8601
    instant with its offset); None when the option is not given."""
    if value is None:
        return None
    try:
        return parse_instant(value)
    except NotAnInstant as exc:
        raise fail(f"{option}: {exc}") from None


def call(task: str, kwargs: dict[str, Any], timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
    """Send an admin task on ``dust.requests``, wait for its reply, fail on an error reply."""

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
        forget(result)
    if not isinstance(reply, dict) or reply.get("status") != "ok":
        reason = reply.get("reason") if isinstance(reply, dict) else repr(reply)
        raise fail(str(reason))
    return reply


def forget(result: Any) -> None:
    try:
        result.forget()
    except Exception:  # a backend that cannot forget keeps it until result_expires
        pass


def amount_label(kind: str, currency: str | None) -> str:
    return "dust" if kind == "dust" else f"{currency} store credit"
