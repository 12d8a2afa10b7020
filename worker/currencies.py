"""Which currency codes open store-credit accounts: ISO 4217, plus what a store adds.

The list is ISO 4217's active codes as ``pycountry`` ships them (its data follows the
standard's maintenance agency), less ``XTS`` (reserved for testing) and ``XXX`` (no
currency): neither is money a customer can hold. A store that really takes another code
(a regional or a new currency) adds it with ``DUST_EXTRA_CURRENCIES``. Anything else is a
typo or forged input, and must never open an account.
"""

from __future__ import annotations

import re

import pycountry

#: Not money: "codes specifically reserved for testing purposes" and "no currency".
NOT_MONEY = frozenset({"xts", "xxx"})

ISO_4217: frozenset[str] = (
    frozenset(currency.alpha_3.lower() for currency in pycountry.currencies) - NOT_MONEY
)

#: The shape of a code: three ASCII letters (matched case-insensitively, stored lower-case).
CODE = re.compile(r"^[A-Za-z]{3}$")


def known(code: str, currencies: frozenset[str] | None = None) -> bool:
    """Whether ``code`` (any case) is one of ``currencies`` (ISO 4217 when None)."""
    return bool(CODE.match(code)) and code.lower() in (
        ISO_4217 if currencies is None else currencies
    )


def problem(code: str, currencies: frozenset[str] | None = None) -> str | None:
    """Why ``code`` is refused, or None when it is a known currency."""
    if not CODE.match(code):
        return f"currency code {code!r} is not three letters"
    if not known(code, currencies):
        return (
            f"currency code {code.lower()!r} is not ISO 4217"
            " (a store can add codes it takes with DUST_EXTRA_CURRENCIES)"
        )
    return None
