"""Settings (docs/CONTRACT.md §2): defaults, overrides, and one clear line naming a bad variable."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from dust.worker.settings import ConfigError, get_settings


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


BAD = [
    ("DUST_EARN_RATE", "abc"),
    ("DUST_EARN_RATE", "-0.01"),
    ("DUST_EARN_RATE", "NaN"),
    ("DUST_EARN_RATES", "not json"),
    ("DUST_EARN_RATES", '["jpy", "1"]'),
    ("DUST_EARN_RATES", '{"yenn": "1"}'),
    ("DUST_EARN_RATES", '{"jpy": "lots"}'),
    ("DUST_CLAWBACK_POLICY", "foo"),
    ("DUST_REDEEM_VALUE", "0"),
    ("DUST_REDEEM_VALUE", "-1"),
    ("DUST_REDEEM_VALUE", "one"),
    ("DUST_REDEEM_VALUES", "[1]"),
    ("DUST_REDEEM_VALUES", '{"usd": "0"}'),
    ("DUST_REDEEM_VALUES", '{"dollar": "1"}'),
    ("DUST_REDEEM_VALUES", '{"usd": true}'),
    ("DUST_POINTS_TTL_DAYS", "-1"),
    ("DUST_POINTS_TTL_DAYS", "ten"),
    ("DUST_HOLD_TTL_SECONDS", "0"),
    ("DUST_DEFAULT_CURRENCY", "dollars"),
    ("DUST_VISIBILITY_TIMEOUT_SECONDS", "1"),
]


@pytest.mark.parametrize(("name", "value"), BAD, ids=[f"{n}={v}" for n, v in BAD])
def test_a_bad_value_raises_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        get_settings()
    message = str(raised.value)
    assert "\n" not in message
    assert name in message
    assert message.startswith("dust: invalid configuration: ")


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = get_settings()
    assert settings.earn_rate == Decimal("0.01")
    assert settings.earn_rates == {}
    assert (settings.points_ttl_days, settings.hold_ttl_seconds) == (365, 3600)
    assert settings.clawback_policy == "debt"
    assert settings.default_currency is None
    assert settings.visibility_timeout_seconds == 300
    assert settings.redeem_for("usd") == settings.redeem_for(None) == Decimal("1")
    assert settings.redeem_table() == {"default": "1"}
    assert settings.database == f"sqlite:///{tmp_path / 'dust.db'}"


def test_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUST_EARN_RATE", "0.05")
    monkeypatch.setenv("DUST_EARN_RATES", '{"JPY": "1", "eur": 0.02}')
    monkeypatch.setenv("DUST_CLAWBACK_POLICY", "clamp")
    monkeypatch.setenv("DUST_POINTS_TTL_DAYS", "0")
    monkeypatch.setenv("DUST_DEFAULT_CURRENCY", " USD ")
    settings = get_settings()
    assert settings.rate_for("jpy") == Decimal("1")
    assert settings.rate_for("EUR") == Decimal("0.02")  # a JSON number, read exactly
    assert settings.rate_for("usd") == Decimal("0.05")
    assert settings.clawback_policy == "clamp"
    assert settings.points_ttl_days == 0
    assert settings.default_currency == "usd"


def test_redeem_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUST_REDEEM_VALUE", "0.5")
    monkeypatch.setenv("DUST_REDEEM_VALUES", '{"JPY": "2", "kwd": 12.5}')
    settings = get_settings()
    assert settings.redeem_for("jpy") == Decimal("2")
    assert settings.redeem_for("KWD") == Decimal("12.5")  # a JSON number, read exactly
    assert settings.redeem_for("usd") == settings.redeem_for(None) == Decimal("0.5")
    assert settings.redeem_table() == {"default": "0.5", "jpy": "2", "kwd": "12.5"}


@pytest.mark.parametrize(
    ("name", "value"), [("DUST_CLAWBACK_POLICY", "foo"), ("DUST_EARN_RATE", "abc")]
)
def test_the_cli_exits_2_with_one_line_on_bad_configuration(
    tmp_path: Path, name: str, value: str
) -> None:
    dust = Path(sys.executable).parent / "dust"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUST_")}
    env.update({name: value, "DUST_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"})
    result = subprocess.run(
        [str(dust), "balance", "x"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert name in lines[0]
    assert result.stdout == ""
    assert not (tmp_path / "x.db").exists()
