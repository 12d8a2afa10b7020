"""Properties of the payload schemas and the envelope parser, over generated input.

Whatever arrives, validation either accepts or refuses with a reason (``Rejected``), never
anything else; what it accepts keeps every id exactly as sent and names a known currency;
the envelope parser never raises, and refuses anything nested deeper than its limit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis_profiles import bounded

from dust.ledger.currencies import ISO_4217
from dust.subscribers.base import ID_PATTERN, Context, Payload, Rejected, parse
from dust.subscribers.customer_created import CustomerPayload
from dust.subscribers.order_canceled import OrderCanceledPayload
from dust.subscribers.order_placed import OrderPlacedPayload
from dust.subscribers.product_updated import ProductPayload
from dust.subscribers.refund_created import RefundPayload
from dust.tasks.inbox import MAX_DEPTH, parse_envelope, too_deep

NOW = datetime(2026, 11, 20, tzinfo=UTC)
EXTRA = frozenset({"xbt"})
CONTEXT = Context(
    earn_rate=lambda currency: 0,  # type: ignore[arg-type,return-value]
    redeem_value=lambda currency: Decimal(1),
    policy=None,  # type: ignore[arg-type]
    default_currency=None,
    hold_ttl_seconds=60,
    currencies=ISO_4217 | EXTRA,
)

ids = st.one_of(
    st.text(min_size=0, max_size=12),
    st.sampled_from(["cus_1", " cus_1", "cus_1 ", "cus\x001", "a\tb", "\u200bx", "x\ufeff", "a b"]),
    st.builds(lambda s, w: w + s + w, st.text(min_size=1, max_size=5), st.sampled_from(" \t\n\r")),
)
currencies = st.one_of(
    st.sampled_from(["usd", "USD", "eur", "jpy", "zzz", "ZZZ", "us", "usdd", "xts", "xbt", " usd"]),
    st.text(alphabet="abcxyzUSD", min_size=3, max_size=3),
)
amounts = st.one_of(
    st.integers(min_value=-5, max_value=10**16),
    st.sampled_from([1.5, "10", None, True, [], {}]),
)
junk = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True), st.lists(st.integers()))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=30,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, junk)


SCHEMAS: dict[type[Payload], dict[str, st.SearchStrategy[Any]]] = {
    CustomerPayload: {"id": maybe(ids), "group_ids": st.lists(maybe(ids), max_size=3)},
    OrderCanceledPayload: {"id": maybe(ids)},
    ProductPayload: {"id": maybe(ids), "metadata": maybe(json_values)},
    OrderPlacedPayload: {
        "id": maybe(ids),
        "customer_id": maybe(ids),
        "cart_id": maybe(ids),
        "currency_code": maybe(currencies),
        "total": amounts,
        "shipping_total": amounts,
        "tax_total": amounts,
        "items": st.lists(
            st.fixed_dictionaries(
                {"id": maybe(ids), "product_id": maybe(ids), "total": amounts},
                optional={"quantity": amounts},
            ),
            max_size=3,
        ),
    },
    RefundPayload: {
        "id": maybe(ids),
        "order_id": maybe(ids),
        "customer_id": maybe(ids),
        "amount": amounts,
        "currency_code": maybe(currencies),
        "to_store_credit": maybe(st.booleans()),
    },
}
ID_FIELDS = {"id", "customer_id", "cart_id", "order_id", "product_id"}


def payloads(model: type[Payload]) -> st.SearchStrategy[dict[str, Any]]:
    fields = SCHEMAS[model]
    return st.fixed_dictionaries({}, optional=fields)


@pytest.mark.parametrize("model", list(SCHEMAS), ids=lambda m: m.__name__)
@bounded(150, 5000)
@given(data=st.data())
def test_validation_accepts_or_refuses_and_keeps_ids_as_sent(model, data):
    payload = data.draw(payloads(model))
    try:
        parsed = parse(model, payload, CONTEXT)
    except Rejected as refused:
        assert str(refused).startswith("invalid payload: ")
        return
    kept = parsed.model_dump()
    for field in ID_FIELDS & payload.keys():
        if payload[field] is not None:
            assert kept[field] == payload[field]  # never stripped or rewritten
            assert ID_PATTERN.fullmatch(kept[field])
            assert kept[field] == kept[field].strip()
    for sent, item in zip(payload.get("items") or [], kept.get("items") or [], strict=True):
        for field in ("id", "product_id"):
            if sent.get(field) is not None:
                assert item[field] == sent[field]
    for group in kept.get("group_ids") or []:
        assert group == group.strip() and ID_PATTERN.fullmatch(group)
    if "currency_code" in kept:
        assert kept["currency_code"] in ISO_4217 | EXTRA
        assert kept["currency_code"] == payload["currency_code"].lower()


@bounded(150, 5000)
@given(currency=st.text(min_size=1, max_size=4))
def test_a_currency_is_accepted_only_when_iso_4217_or_configured(currency):
    payload = {"id": "r1", "order_id": "o1", "amount": 5, "to_store_credit": True}
    payload["currency_code"] = currency
    known = currency.isascii() and currency.lower() in ISO_4217 | EXTRA and len(currency) == 3
    try:
        parse(RefundPayload, payload, CONTEXT)
    except Rejected:
        assert not known
    else:
        assert known
    # without the configured list, only ISO 4217
    try:
        parse(RefundPayload, payload)
    except Rejected:
        assert not (known and currency.lower() in ISO_4217)


@bounded(150, 3000)
@given(
    core=st.text(min_size=1, max_size=8).filter(lambda s: s == s.strip() and s.isprintable()),
    edge=st.sampled_from([" ", "\t", "\n", "\r", "\x00", "\x0b", "\x0c", "\u00a0", "\u2003"]),
    where=st.sampled_from(["start", "end", "both"]),
)
def test_an_id_with_whitespace_or_control_at_an_end_is_refused(core, edge, where):
    sent = {"start": edge + core, "end": core + edge, "both": edge + core + edge}[where]
    with pytest.raises(Rejected, match="taken as sent"):
        parse(CustomerPayload, {"id": sent}, CONTEXT)
    envelope = {"id": sent, "name": "customer.created", "data": {"id": "c"}}
    parsed = parse_envelope(envelope, NOW)
    assert parsed.error is not None and parsed.event_id != sent


@bounded(150, 5000)
@given(raw=json_values)
def test_the_envelope_parser_never_raises(raw):
    parsed = parse_envelope(raw, NOW)
    assert parsed.event_id and parsed.content_hash
    assert (parsed.envelope is None) == (parsed.error is not None)


def nest(levels: int, leaf: Any = "x") -> Any:
    value = leaf
    for n in range(levels):
        value = {"x": value} if n % 2 else [value]
    return value


@bounded(60, 2000)
@given(levels=st.integers(min_value=0, max_value=3000))
def test_nesting_deeper_than_the_limit_is_refused_with_the_reason(levels):
    envelope = {"id": "evt_deep", "name": "x.y", "data": {"payload": nest(levels)}}
    depth = 2 + levels  # the envelope, data, then the levels
    assert too_deep(envelope) == (depth > MAX_DEPTH)
    parsed = parse_envelope(envelope, NOW)
    if depth > MAX_DEPTH:
        assert parsed.error == f"envelope nested more than {MAX_DEPTH} levels deep"
        assert parsed.event_id == "evt_deep"
    else:
        assert parsed.error is None
