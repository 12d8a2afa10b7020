"""``dust rules``: add, list and end earn rules from the command line (in process, on the
test database). Bad input prints one line ``dust: ...``, exits 1 (Typer's usage errors: 2)
and changes nothing."""

from __future__ import annotations

import getpass
import json
from typing import Any

import pytest
from typer.testing import CliRunner

from dust.worker.cli import app


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def ok(*args: str) -> Any:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_add_list_and_end_rules(dust_db: Any) -> None:
    vip = ok("rules", "add", "group-multiplier", "vip", "2", "--reason", "VIP tier")
    assert (vip["kind"], vip["group_id"], vip["multiplier"], vip["ends_at"]) == (
        "group-multiplier",
        "vip",
        "2",
        None,
    )
    assert vip["actor"] == getpass.getuser()
    campaign = ok(
        "rules", "add", "campaign", "1.5", "--starts", "2026-11-27", "--ends",
        "2026-11-30T00:00:00Z", "--currency", "USD", "--name", "Black Friday",
        "--reason", "BF", "--actor", "ann",
    )  # fmt: skip
    assert campaign["currency_code"] == "usd" and campaign["name"] == "Black Friday"
    assert campaign["starts_at"] == "2026-11-27T00:00:00+00:00"
    welcome = ok("rules", "add", "welcome-bonus", "100", "--reason", "sign-up")
    assert welcome["amount"] == 100 and welcome["multiplier"] is None

    ended = ok("rules", "end", str(campaign["id"]), "--at", "2026-11-29", "--reason", "sold out")
    assert ended["ends_at"] == "2026-11-29T00:00:00+00:00"
    listed = ok("rules", "list")
    assert [r["id"] for r in listed] == [vip["id"], campaign["id"], welcome["id"]]
    assert [(c["action"], c["actor"], c["reason"]) for c in listed[1]["changes"]] == [
        ("add", "ann", "BF"),
        ("end", getpass.getuser(), "sold out"),
    ]
    table = run("rules", "list")
    assert table.exit_code == 0 and "group-" in table.stdout


BAD = [
    (["add", "campaign", "0", "--starts", "2026-01-01", "--ends", "2026-02-01"], "> 0 and <= 100"),
    (["add", "campaign", "abc", "--starts", "2026-01-01", "--ends", "2026-02-01"], "a decimal number"),
    (["add", "campaign", "101", "--starts", "2026-01-01", "--ends", "2026-02-01"], "> 0 and <= 100"),
    (["add", "campaign", "NaN", "--starts", "2026-01-01", "--ends", "2026-02-01"], "> 0 and <= 100"),
    (["add", "campaign", "2", "--starts", "2026-03-01", "--ends", "2026-02-01"], "must be after --starts"),
    (["add", "campaign", "2", "--starts", "2026-03-01"], "needs --starts and --ends"),
    (["add", "campaign", "2", "--starts", "2026-03-01", "--ends", "soon"], "not a date"),
    (["add", "group-multiplier", "vip", "2", "--currency", "dollars"], "is not three letters"),
    (["add", "welcome-bonus", "1.5"], "whole number"),
    (["add", "welcome-bonus", "0"], "at least 1"),
    (["end", "x"], "whole number"),
    (["end", "999"], "no rule 999"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "says"), BAD)
def test_bad_input_changes_nothing(dust_db: Any, args: list[str], says: str) -> None:
    before = dust_db.counts()
    reason = [] if args[0] == "end" and args[1] == "x" else ["--reason", "r"]
    result = run("rules", *args, *reason)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith("dust: ") and result.stderr.count("\n") == 1, result.stderr
    assert says in result.stderr
    assert dust_db.counts() == before


def test_reason_is_required_and_an_unknown_kind_is_a_usage_error(dust_db: Any) -> None:
    before = dust_db.counts()
    missing = run("rules", "add", "group-multiplier", "vip", "2")
    assert missing.exit_code == 1 and "--reason is required" in missing.stderr
    unknown = run("rules", "add", "tier", "2", "--reason", "r")
    assert unknown.exit_code == 2 and "No such command 'tier'" in unknown.stderr
    assert dust_db.counts() == before


@pytest.fixture
def dust_db(dust: Any) -> Any:
    return dust
