"""How the command line shows things to people: money by its currency's digits, and
tables that never cut a value short. ``--json`` output keeps integers in minor units."""

from __future__ import annotations

import sys
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

#: Width of a table written to a pipe or a file (rich's default there is 80 columns, and
#: ids, which people copy from the output, would be folded or cut).
PIPE_WIDTH = 240


def money(amount: int, currency: str | None) -> str:
    """``12935, "usd"`` -> ``$129.35``; ``1200, "jpy"`` -> ``¥1,200``; ``-500, "usd"`` ->
    ``-$5.00``. The currency's digits come from CLDR (ISO 4217's minor units)."""
    if not currency:
        return f"{amount:,}"
    from babel.numbers import (  # lazy: CLDR data, money columns only
        format_currency,
        get_currency_precision,
    )

    code = currency.upper()
    digits = get_currency_precision(code)
    return format_currency(Decimal(amount).scaleb(-digits), code, locale="en_US")


def amount(value: int, kind: str, currency: str | None) -> str:
    """Dust as the whole number it is; store credit as money."""
    return str(value) if kind == "dust" else money(value, currency)


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else PIPE_WIDTH
    return Console(stderr=stderr, width=width)


def table(*headers: str, **options: Any) -> Table:
    """A table whose cells fold onto more lines when there is no room, never cut short."""
    result = Table(**options)
    for header in headers:
        result.add_column(header, overflow="fold")
    return result
