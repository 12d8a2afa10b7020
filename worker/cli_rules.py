"""``dust rules``: the earn rules (group multipliers, campaigns, welcome bonuses).

Rules are data in the database (``dust.ledger.rules``), written here directly in one
transaction: a worker reads them in the transaction of each event it applies. ``add`` and
``end`` take ``--reason`` (required) and ``--actor`` (default: the operating-system user),
kept in the rule's audit trail; rules are never edited or deleted.

Errors print one line ``dust: ...`` on stderr and exit 1, and change nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from dust.worker import cli_admin  # its helpers, used at call time (it may be mid-import here)
from dust.worker.cli import JsonOption, app, fail, print_json

rules_app = typer.Typer(help="Earn rules: group multipliers, campaigns, welcome bonus.")
add_app = typer.Typer(help="Add an earn rule.", no_args_is_help=True)
rules_app.add_typer(add_app, name="add")
app.add_typer(rules_app, name="rules")

ReasonOption = Annotated[
    str | None, typer.Option("--reason", help="Why (required; kept in the rule's history).")
]
StartsOption = Annotated[
    str | None,
    typer.Option("--starts", help="In force from this instant or date, inclusive (default: now)."),
]
EndsOption = Annotated[
    str | None,
    typer.Option("--ends", help="In force until this instant or date, exclusive (default: open)."),
]
ActorOption = Annotated[
    str | None,
    typer.Option("--actor", help="Who is doing this (default: the operating-system user)."),
]
CurrencyOption = Annotated[
    str | None, typer.Option("--currency", help="Only orders in this currency (default: any).")
]


def _reason(reason: str | None) -> str:
    if reason is None or not reason.strip():
        raise fail("--reason is required: say why, it is kept with the rule")
    if len(reason.strip()) > 2000:
        raise fail("--reason is longer than 2000 characters")
    return reason.strip()


def _currency(currency: str | None) -> str | None:
    if currency is None:
        return None
    # The currencies a store takes: ISO 4217 and DUST_EXTRA_CURRENCIES, as everywhere.
    why = cli_admin.currency_problem(currency.strip(), cli_admin.get_settings().currencies)
    if why is not None:
        raise fail(f"--currency: {why}")
    return currency.strip().lower()


def _window(starts: str | None, ends: str | None) -> tuple[datetime, datetime | None]:
    from dust.models.base import utcnow

    start = cli_admin._instant(starts, "--starts") or utcnow()
    end = cli_admin._instant(ends, "--ends")
    if end is not None and end <= start:
        raise fail(f"--ends ({end.isoformat()}) must be after --starts ({start.isoformat()})")
    return start, end


def _multiplier(text: str) -> Any:
    from dust.ledger.rules import InvalidRule, parse_multiplier

    try:
        return parse_multiplier(text)
    except InvalidRule as exc:
        raise fail(f"MULTIPLIER: {exc}") from None


def _write(work: Any) -> dict[str, Any]:
    """Run ``work(session)`` in one transaction; a refused rule changes nothing."""
    from dust.ledger.rules import InvalidRule, rule_json
    from dust.worker.db import session_scope

    try:
        with session_scope() as session:
            return rule_json(work(session))
    except InvalidRule as exc:
        raise fail(str(exc)) from None


def _added(rule: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(rule)
        return
    typer.echo(f"added rule {rule['id']}: {_describe(rule)}")


def _describe(rule: dict[str, Any]) -> str:
    kind = rule["kind"]
    if kind == "welcome-bonus":
        what = f"welcome bonus of {rule['amount']} dust"
    elif kind == "campaign":
        what = f"campaign x{rule['multiplier']}" + (f" ({rule['name']})" if rule["name"] else "")
    else:
        what = f"group {rule['group_id']} x{rule['multiplier']}"
    if rule["currency_code"]:
        what += f" on {rule['currency_code']} orders"
    until = rule["ends_at"] or "open"
    return f"{what}, from {rule['starts_at']} until {until}"


@add_app.command("group-multiplier")
def add_group_multiplier(
    group_id: Annotated[str, typer.Argument(help="The customer group (Medusa group id).")],
    multiplier: Annotated[str, typer.Argument(help="Decimal, > 0 and <= 100, e.g. 2 or 1.5.")],
    starts: StartsOption = None,
    ends: EndsOption = None,
    currency: CurrencyOption = None,
    reason: ReasonOption = None,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Customers in GROUP_ID earn MULTIPLIER times the rate on orders placed in the window."""
    from dust.ledger import rules

    group = group_id.strip()
    if not group or len(group) > 200:
        raise fail("GROUP_ID must be 1 to 200 characters")
    value = _multiplier(multiplier)
    start, end = _window(starts, ends)
    why, who, code = _reason(reason), cli_admin._actor(actor), _currency(currency)
    rule = _write(
        lambda session: rules.add_rule(
            session,
            kind=rules.GROUP_MULTIPLIER,
            group_id=group,
            multiplier=value,
            currency_code=code,
            starts_at=start,
            ends_at=end,
            actor=who,
            reason=why,
        )
    )
    _added(rule, as_json)


@add_app.command("campaign")
def add_campaign(
    multiplier: Annotated[str, typer.Argument(help="Decimal, > 0 and <= 100, e.g. 2 or 1.5.")],
    starts: StartsOption = None,
    ends: EndsOption = None,
    currency: CurrencyOption = None,
    name: Annotated[str | None, typer.Option("--name", help="What the campaign is.")] = None,
    reason: ReasonOption = None,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every customer earns MULTIPLIER times the rate on orders placed from --starts to --ends."""
    from dust.ledger import rules

    value = _multiplier(multiplier)
    if starts is None or ends is None:
        raise fail("a campaign needs --starts and --ends")
    start, end = _window(starts, ends)
    if name is not None and not 0 < len(name.strip()) <= 200:
        raise fail("--name must be 1 to 200 characters")
    why, who, code = _reason(reason), cli_admin._actor(actor), _currency(currency)
    rule = _write(
        lambda session: rules.add_rule(
            session,
            kind=rules.CAMPAIGN,
            multiplier=value,
            currency_code=code,
            name=name.strip() if name else None,
            starts_at=start,
            ends_at=end,
            actor=who,
            reason=why,
        )
    )
    _added(rule, as_json)


@add_app.command("welcome-bonus")
def add_welcome_bonus(
    amount: Annotated[str, typer.Argument(help="Dust credited once to each new customer.")],
    starts: StartsOption = None,
    ends: EndsOption = None,
    reason: ReasonOption = None,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Credit AMOUNT dust once to each customer created (customer.created) in the window."""
    from dust.ledger import rules

    number = cli_admin._whole(amount, "AMOUNT", minimum=1)
    start, end = _window(starts, ends)
    why, who = _reason(reason), cli_admin._actor(actor)
    rule = _write(
        lambda session: rules.add_rule(
            session,
            kind=rules.WELCOME_BONUS,
            amount=number,
            starts_at=start,
            ends_at=end,
            actor=who,
            reason=why,
        )
    )
    _added(rule, as_json)


@rules_app.command("end")
def end(
    rule_id: Annotated[str, typer.Argument(help="The rule's id (dust rules list).")],
    at: Annotated[
        str | None,
        typer.Option("--at", help="Not in force from this instant on (default: now)."),
    ] = None,
    reason: ReasonOption = None,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """End a rule (it stays, with its history). Orders already recorded keep what they earned."""
    from dust.ledger import rules
    from dust.models.base import utcnow

    number = cli_admin._whole(rule_id, "RULE_ID", minimum=1)
    instant = cli_admin._instant(at, "--at") or utcnow()
    why, who = _reason(reason), cli_admin._actor(actor)
    rule = _write(lambda session: rules.end_rule(session, number, instant, actor=who, reason=why))
    if as_json:
        print_json(rule)
        return
    typer.echo(f"ended rule {rule['id']} at {rule['ends_at']}: {_describe(rule)}")


@rules_app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """Every earn rule, ended ones too, with who added and ended it."""
    from rich.console import Console
    from rich.table import Table

    from dust.ledger import rules
    from dust.worker.db import session_scope

    with session_scope(read_only=True) as session:
        found = rules.list_rules(session)
    if as_json:
        print_json(found)
        return
    table = Table("id", "kind", "group", "multiplier", "amount", "currency", "starts", "ends", "by")
    for rule in found:
        table.add_row(
            str(rule["id"]),
            str(rule["kind"]),
            rule["group_id"] or "",
            rule["multiplier"] or "",
            "" if rule["amount"] is None else str(rule["amount"]),
            rule["currency_code"] or "",
            str(rule["starts_at"])[:19],
            str(rule["ends_at"] or "")[:19],
            str(rule["actor"]),
        )
    Console().print(table)
