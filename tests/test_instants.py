"""One reading of the instants an operator types (worker/instants.py), whatever the option."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dust.worker.instants import NotAnInstant, parse_instant

ACCEPTED = [
    ("2026-03-01", datetime(2026, 3, 1, tzinfo=UTC)),
    ("2026-03-01T00:00:00Z", datetime(2026, 3, 1, tzinfo=UTC)),
    ("2026-03-01T00:00z", datetime(2026, 3, 1, tzinfo=UTC)),
    ("2026-03-01T01:30+01:00", datetime(2026, 3, 1, 0, 30, tzinfo=UTC)),
    (" 2026-03-01T00:00:00.5+00:00 ", datetime(2026, 3, 1, 0, 0, 0, 500000, tzinfo=UTC)),
    # no offset: UTC, never the machine's zone
    ("2026-03-01T00:00", datetime(2026, 3, 1, tzinfo=UTC)),
    ("2026-03-01T10:15:30", datetime(2026, 3, 1, 10, 15, 30, tzinfo=UTC)),
]
REFUSED = [
    ("2026-03-01T25:00", "is not a date or an ISO 8601 instant"),
    ("tomorrow", "is not a date or an ISO 8601 instant"),
    ("2026-02-30", "is not a date or an ISO 8601 instant"),
    ("", "is not a date or an ISO 8601 instant"),
]


@pytest.mark.parametrize(("text", "instant"), ACCEPTED)
def test_accepted(text: str, instant: datetime) -> None:
    assert parse_instant(text) == instant
    assert parse_instant(text).tzinfo is UTC


@pytest.mark.parametrize(("text", "says"), REFUSED)
def test_refused(text: str, says: str) -> None:
    with pytest.raises(NotAnInstant, match=says):
        parse_instant(text)


@pytest.mark.parametrize(
    "command",
    [
        ["expire", "--as-of"],
        ["events", "replay", "--status", "failed", "--since"],
        ["export", "--since"],
        ["rules", "end", "1", "--reason", "r", "--at"],
    ],
)
@pytest.mark.parametrize(("text", "says"), REFUSED[:2])
def test_every_option_refuses_the_same_text_the_same_way(
    command: list[str], text: str, says: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``dust expire --as-of 2026-03-01T00:00`` and ``dust events replay --since`` with the
    same text: one answer (before any database or broker is needed)."""
    from dust.cli.main import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*command, text])
    assert result.exit_code == 1, (result.stdout, result.stderr)
    option = command[-1]
    assert (
        result.stderr
        == f"dust: {option}: {text!r} {says} (e.g. 2026-11-20 or 2026-11-20T10:00:00Z)\n"
    )
