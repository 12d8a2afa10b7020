"""The earn formula and the refund cap of an order: one place, used by the one-event path
(``dust.ledger.orders``) and the set-based one (``NewOrder``, ``place_new``).

Money is in minor units of the order's currency, dust in dust; ``redeem`` is what one
dust is worth in minor units (``DUST_REDEEM_VALUES`` / ``DUST_REDEEM_VALUE``, passed in)::

    goods           = max(0, total − shipping_total − tax_total)     (what the goods cost)
    eligible        = min(Σ total of items that are neither dust-only nor gift cards, goods)
                      or goods when the order lists no items
    dust_only       = Σ total of items whose product is dust-only
    dust_for_rest   = ceil(max(0, dust_total × redeem − dust_only))   (dust pays dust-only
                      items first; a fraction of a minor unit paid in dust earns nothing)
    base            = eligible − store_credit_total − gift_card_total − dust_for_rest
    earned          = floor(max(0, base − refunded) × rate)           (0: guest, canceled)

``base`` is kept on the order as it is (it may be negative), so refunds and cancels that
come later compute the same target from it: the clawback target is ``earned`` with the
refunds known then. Earn rules change the rate only: ``rate`` is the configured rate times
the order's recorded, capped rules multiplier (``dust.ledger.rules``; :func:`multiplied_rate`),
so a clawback uses the multiplier the order earned with, not the rules in force later.

The refund cap: the refunds of one order add up to at most what it was paid in money
and store credit, ``floor(total − dust_total × redeem)`` (refunds are whole minor units,
so comparing with the floor is the exact comparison), never below 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext


@dataclass(frozen=True)
class Line:
    """One item of an order, as the formula sees it."""

    total: int
    dust_only: bool = False
    giftcard: bool = False


@dataclass(frozen=True)
class PaidOrder:
    """What an ``order.placed`` says it cost and how it was paid."""

    total: int
    shipping_total: int = 0
    tax_total: int = 0
    dust_total: int = 0
    store_credit_total: int = 0
    gift_card_total: int = 0
    items: Sequence[Line] | None = None

    @property
    def goods(self) -> int:
        """What the goods cost: the cap of what items may claim, whatever they add up to."""
        return max(0, self.total - self.shipping_total - self.tax_total)


def floor_dust(amount: int, rate: Decimal) -> int:
    """floor(amount × rate) in exact decimal arithmetic."""
    with localcontext() as exact:
        exact.prec = 100  # a rate times rule multipliers has more digits than the default 28
        return int((Decimal(amount) * rate).to_integral_value(rounding=ROUND_FLOOR))


def multiplied_rate(rate: str | Decimal | None, multiplier: str | Decimal | None) -> Decimal:
    """The rate an order earns at: the configured rate times its rules' capped multiplier
    (none recorded: 1), exactly."""
    with localcontext() as exact:
        exact.prec = 100
        return Decimal(rate or "0") * Decimal(multiplier or "1")


def earn_base(order: PaidOrder, redeem: Decimal) -> int:
    """The order's earning base before refunds (may be negative: floored when used)."""
    if order.items is None:
        eligible, dust_only = order.goods, 0
    else:
        eligible = min(
            order.goods,
            sum(i.total for i in order.items if not (i.dust_only or i.giftcard)),
        )
        dust_only = sum(i.total for i in order.items if i.dust_only)
    dust_money = Decimal(order.dust_total) * redeem - dust_only
    dust_for_rest = int(max(Decimal(0), dust_money).to_integral_value(rounding=ROUND_CEILING))
    return eligible - order.store_credit_total - order.gift_card_total - dust_for_rest


def earned(base: int, refunded: int, rate: Decimal) -> int:
    """Net dust an order earns with ``refunded`` money refunded: the earn and the
    clawback target alike."""
    return floor_dust(max(0, base - refunded), rate)


def earn_target(
    *, placed: bool, canceled: bool, guest: bool, base: int, refunded: int, rate: Decimal
) -> tuple[int, str | None]:
    """The dust an order should have earned, net, and why it is zero when it is."""
    if not placed:
        return 0, "not placed"
    if canceled:
        return 0, "canceled"
    if guest:
        return 0, "guest order"
    target = earned(base, refunded, rate)
    return target, None if target else "earning base is zero"


def refund_cap(order: PaidOrder, redeem: Decimal) -> int:
    """Most that the money refunds of the order may add up to (see the module doc)."""
    paid = Decimal(order.total) - Decimal(order.dust_total) * redeem
    return max(0, int(paid.to_integral_value(rounding=ROUND_FLOOR)))
