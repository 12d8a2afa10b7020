"""The one settings object: every ``DUST_*`` environment variable of docs/CONTRACT.md §2.

Defaults are the embedded setup (SQLite file and a file-based broker in the working
directory), so a fresh machine with no servers runs Dust as it is. A bad value stops
start-up with one line naming the variable (:func:`load_settings`).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from dust.ledger.currencies import ISO_4217
from dust.ledger.currencies import problem as currency_problem

CURRENCY_RE = re.compile(r"^[a-z]{3}$")
#: Broker URL schemes: Redis in production (worker/redis_transport.py); the embedded
#: file broker for the demo; memory for tests.
BROKER_SCHEMES = ("redis", "rediss", "filesystem", "memory")

#: Folder for the embedded broker and result files, under the working directory.
EMBEDDED_DIR = ".dust"
#: Longest schedule a job may have: 31 days.
MAX_SCHEDULE_SECONDS = 31 * 86400


class ConfigError(SystemExit):
    """Invalid configuration; its message is the one line shown to the operator."""


#: Highest earn rate accepted: with amounts capped at 10^15 (subscribers.base.MAX_AMOUNT),
#: earned dust stays far inside a 64-bit integer.
MAX_RATE = Decimal(1000)


def _decimal_rate(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError(f'{name} must be a decimal string such as "0.01", not {value!r}')
    try:
        rate = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{name} must be a decimal number, got {value!r}") from None
    if not rate.is_finite() or rate < 0 or rate > MAX_RATE:
        raise ValueError(f"{name} must be a decimal between 0 and {MAX_RATE}, got {value!r}")
    return rate


def _redeem(value: Any, name: str) -> Decimal:
    redeem = _decimal_rate(value, name)
    if redeem == 0:
        raise ValueError(f"{name} must be above 0, got {value!r}")
    return redeem


def _per_currency(value: Any, read: Any, what: str) -> dict[str, Decimal]:
    """A JSON object of currency code → decimal string, each read by ``read``."""
    if isinstance(value, str):
        try:
            value = json.loads(value or "{}", parse_float=str)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise ValueError('must be a JSON object such as {"jpy": "1"}')
    values: dict[str, Decimal] = {}
    for currency, one in value.items():
        code = str(currency).strip().lower()
        if not CURRENCY_RE.match(code):
            raise ValueError(f"{currency!r} is not a three-letter currency code")
        values[code] = read(one, f"{what} for {code}")
    return values


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DUST_", extra="ignore", frozen=True)

    database_url: str = ""
    broker_url: str = ""
    result_backend: str = ""
    earn_rate: Annotated[Decimal, NoDecode] = Decimal("0.01")
    earn_rates: Annotated[dict[str, Decimal], NoDecode] = Field(default_factory=dict)
    #: Money value of one dust, in minor units (paying with dust, the earn formula).
    redeem_value: Annotated[Decimal, NoDecode] = Decimal("1")
    redeem_values: Annotated[dict[str, Decimal], NoDecode] = Field(default_factory=dict)
    points_ttl_days: int = Field(default=365, ge=0, le=36500)
    hold_ttl_seconds: int = Field(default=3600, gt=0, le=30 * 86400)
    clawback_policy: Literal["debt", "clamp"] = "debt"
    #: Days dust earned on an order stays pending (in the balance, not available); 0: off.
    pending_days: int = Field(default=0, ge=0, le=3650)
    #: Cap on the product of the earn rules' multipliers an order earns with.
    max_earn_multiplier: Annotated[Decimal, NoDecode] = Decimal(10)
    #: Codes a store really takes beyond ISO 4217 (ledger/currencies.py): a comma-separated
    #: list or a JSON array, e.g. ``xbt,xau``. Read before the fields that name currencies.
    extra_currencies: Annotated[frozenset[str], NoDecode] = frozenset()
    default_currency: str | None = None
    visibility_timeout_seconds: int = Field(default=300, ge=10, le=86400)
    #: Most events a pool process takes as one batch (worker/batching.py); 1 = no batches.
    event_batch_size: int = Field(default=50, ge=1, le=1000)
    #: Beat schedules of the jobs (seconds between runs; 0 = not scheduled). Each run
    #: covers one period of this length (UNIQUE (job, period) in ``dust_job_runs``).
    schedule_expire_holds_seconds: int = Field(default=60, ge=0, le=MAX_SCHEDULE_SECONDS)
    schedule_expire_lots_seconds: int = Field(default=86400, ge=0, le=MAX_SCHEDULE_SECONDS)
    schedule_reconcile_seconds: int = Field(default=86400, ge=0, le=MAX_SCHEDULE_SECONDS)
    #: Celery message signing (all three, or none): this process's private key and
    #: certificate (PEM files), and the certificates it trusts (a directory or a glob).
    signing_key_file: str = ""
    signing_cert_file: str = ""
    signing_cert_store: str = Field(default="", validate_default=True)
    #: Prometheus metrics of the worker at http://HOST:PORT/metrics (unset: off).
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    #: ``text`` (readable lines) or ``json`` (one JSON object per line).
    log_format: Literal["text", "json"] = "text"

    @field_validator("signing_key_file", "signing_cert_file", mode="after")
    @classmethod
    def _readable_file(cls, value: str) -> str:
        value = value.strip()
        if value and not Path(value).is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("signing_cert_store", mode="after")
    @classmethod
    def _signing_all_or_none(cls, value: str, info: Any) -> str:
        value = value.strip()
        given = [bool(info.data.get(f)) for f in ("signing_key_file", "signing_cert_file")]
        if any(given) or value:
            if not (all(given) and value):
                raise ValueError(
                    "message signing needs DUST_SIGNING_KEY_FILE, DUST_SIGNING_CERT_FILE"
                    " and DUST_SIGNING_CERT_STORE together"
                )
            import glob

            pattern = str(Path(value) / "*") if Path(value).is_dir() else value
            if not glob.glob(pattern):
                raise ValueError(f"no certificate found at {value}")
        return value

    @property
    def signing(self) -> bool:
        return bool(self.signing_cert_store)

    @field_validator("earn_rate", mode="before")
    @classmethod
    def _earn_rate(cls, value: Any) -> Decimal:
        return _decimal_rate(value, "rate")

    @field_validator("max_earn_multiplier", mode="before")
    @classmethod
    def _max_multiplier(cls, value: Any) -> Decimal:
        if isinstance(value, bool) or isinstance(value, float):
            raise ValueError(f'must be a decimal string such as "10", not {value!r}')
        try:
            cap = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError(f"must be a decimal number, got {value!r}") from None
        if not cap.is_finite() or cap < 1 or cap > 10000:
            raise ValueError(f"must be a decimal from 1 to 10000, got {value!r}")
        return cap

    @field_validator("earn_rates", mode="before")
    @classmethod
    def _earn_rates(cls, value: Any) -> dict[str, Decimal]:
        return _per_currency(value, _decimal_rate, "rate")

    @field_validator("redeem_value", mode="before")
    @classmethod
    def _redeem_value(cls, value: Any) -> Decimal:
        return _redeem(value, "redeem value")

    @field_validator("redeem_values", mode="before")
    @classmethod
    def _redeem_values(cls, value: Any) -> dict[str, Decimal]:
        return _per_currency(value, _redeem, "redeem value")

    @field_validator("extra_currencies", mode="before")
    @classmethod
    def _extra_currencies(cls, value: Any) -> frozenset[str]:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"not valid JSON ({exc.msg})") from None
            else:
                value = [code for code in text.split(",") if code.strip()]
        if not isinstance(value, list | tuple | set | frozenset):
            raise ValueError('must be codes separated by commas, e.g. "xbt,xau"')
        codes = set()
        for code in value:
            if not isinstance(code, str) or not CURRENCY_RE.match(code.strip().lower()):
                raise ValueError(f"{code!r} is not a three-letter currency code")
            codes.add(code.strip().lower())
        return frozenset(codes)

    @field_validator("default_currency", mode="before")
    @classmethod
    def _default_currency(cls, value: Any, info: Any) -> str | None:
        if value is None or str(value).strip() == "":
            return None
        code = str(value).strip().lower()
        why = currency_problem(code, ISO_4217 | info.data.get("extra_currencies", frozenset()))
        if why is not None:
            raise ValueError(why)
        return code

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _port(cls, value: Any) -> Any:
        return None if value is None or str(value).strip() == "" else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format(cls, value: Any) -> Any:
        return str(value).strip().lower() if value is not None else value

    @field_validator("database_url", "broker_url", "result_backend", mode="after")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("database_url", mode="after")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if not value:
            return value
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            backend = make_url(value).get_backend_name()
        except (ArgumentError, ValueError):
            raise ValueError(
                "not a database URL (expected postgresql+psycopg://user@host/db or sqlite:///path)"
            ) from None
        if backend not in ("postgresql", "sqlite"):
            raise ValueError(
                f"{backend} is not supported: use PostgreSQL"
                " (postgresql+psycopg://user@host/db) or SQLite (sqlite:///path)"
            )
        return value

    @field_validator("broker_url", mode="after")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        if not value:
            return value
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in BROKER_SCHEMES:
            raise ValueError(
                f"{(scheme or value)!r} is not a broker Dust runs on: use redis://host:6379/0"
                " (or rediss://), or leave it unset for the embedded broker"
            )
        return value

    # -- derived values -------------------------------------------------------------

    @property
    def embedded_dir(self) -> Path:
        return Path.cwd() / EMBEDDED_DIR

    @property
    def database(self) -> str:
        """The SQLAlchemy URL in use (the SQLite file ``dust.db`` when unset)."""
        return self.database_url or f"sqlite:///{Path.cwd() / 'dust.db'}"

    @property
    def broker(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def uses_embedded_broker(self) -> bool:
        return not self.broker_url

    @property
    def backend(self) -> str:
        if self.result_backend:
            return self.result_backend
        if self.uses_embedded_broker:
            return f"file://{self.embedded_dir / 'results'}"
        return self.broker

    @property
    def beat_schedule_file(self) -> Path:
        """Where ``celery beat`` keeps its state (last run of each schedule entry)."""
        return self.embedded_dir / "celerybeat-schedule"

    def job_schedule_seconds(self, job: str) -> int:
        """The schedule of job ``expire_holds``, ``expire_lots`` or ``reconcile``."""
        return int(getattr(self, f"schedule_{job}_seconds"))

    @property
    def currencies(self) -> frozenset[str]:
        """The currency codes events, requests and admin commands may use."""
        return ISO_4217 | self.extra_currencies

    def rate_for(self, currency_code: str) -> Decimal:
        return self.earn_rates.get(currency_code.lower(), self.earn_rate)

    def redeem_for(self, currency_code: str | None) -> Decimal:
        """Minor units of ``currency_code`` one dust is worth (the default when None)."""
        if currency_code is None:
            return self.redeem_value
        return self.redeem_values.get(currency_code.lower(), self.redeem_value)

    def redeem_table(self) -> dict[str, str]:
        """``{"default": "1", "<currency>": "..."}``: what replies show clients."""
        table = {"default": str(self.redeem_value)}
        table.update((code, str(value)) for code, value in sorted(self.redeem_values.items()))
        return table


def _one_line(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"DUST_{field.upper()}: {message}")
    return "dust: invalid configuration: " + "; ".join(parts)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment.

    Raises :class:`ConfigError` (a ``SystemExit``) with one line naming the bad variable.
    """
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
