"""Bad input at volume, through real workers (docs/CONTRACT.md §4 "Bad input").

Thousands of generated malformed envelopes and payloads (wrong types, floats, huge
integers, negative and zero amounts, missing fields, deep nesting, very long strings, odd
unicode, invalid JSON text, envelopes that are not objects at all) are published mixed with
good events by a bare Celery client, then raw broker messages no Celery client would send:
a body that is not JSON, a pickle body, a task name nobody registered, missing and garbage
headers, a body of the wrong shape.

The workers must never die; every bad envelope is recorded ``rejected`` with a reason and
writes nothing else; every good one is applied exactly once; a raw message the worker
cannot take is refused (or, for a body that is not JSON, recorded ``rejected``) and the
worker goes on.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import random
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Exchange, Producer
from sqlalchemy import bindparam, text

from dust.tasks.inbox import parse_envelope

from .support import BROKER_URL, EVENTS_QUEUE, wait_queue_empty

pytestmark = [pytest.mark.services, pytest.mark.e2e]

SEED = int(os.environ.get("DUST_FUZZ_SEED", "20261121"))
BAD_COUNT = int(os.environ.get("DUST_FUZZ_BAD", "1800"))
GOOD_ORDERS = int(os.environ.get("DUST_FUZZ_GOOD", "100"))

# -- values that are wrong wherever an integer amount is expected -------------------------

NOT_AN_AMOUNT: list[Any] = [
    "10",
    "",
    10.0,
    10.5,
    1e20,
    -0.5,
    float("inf"),
    float("nan"),
    True,
    False,
    None,
    [],
    [10],
    {},
    {"amount": 10},
    -1,
    -(10**18),
    10**16,
    2**63,
    2**64 + 1,
    10**300,
    -(2**63) - 1,
]
NOT_A_POSITIVE_AMOUNT = [*NOT_AN_AMOUNT, 0]
NOT_AN_ID: list[Any] = [
    "",
    "   ",
    "x" * 201,
    "a\x00b",
    "tab\there",
    "\x7f",
    5,
    5.5,
    True,
    None,
    [],
    {"id": "x"},
]
NOT_A_CURRENCY: list[Any] = [
    "usdd",
    "us",
    "",
    "u$d",
    "12a",
    "ÜSD",
    "u sd",
    840,
    None,
    ["usd"],
    True,
]
NOT_A_BOOL: list[Any] = ["true", "false", 1, 0, None, "yes", [], {}]
ODD_TEXT: list[str] = [
    "\ud800",  # a lone surrogate: valid in JSON text, not in UTF-8
    "a\udfffb",
    "\u202eevil\u202c",
    "\u200b",
    "😀" * 60,
    "ｆｕｌｌｗｉｄｔｈ",
    "e\u0301" * 50,
    "\ufeff",
    "\uffff",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢" * 40,
]


def nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


class Generator:
    """Malformed envelopes, each with an id of its own when it has one at all."""

    def __init__(self, uid: str, seed: int) -> None:
        self.uid = uid
        self.rng = random.Random(seed)
        self.n = 0

    def next_id(self) -> str:
        self.n += 1
        return f"fz_{self.uid}_{self.n}"

    def good_order(self, k: int, amount: int) -> dict[str, Any]:
        return {
            "id": f"fzo_{self.uid}_{k}",
            "customer_id": f"fzc_{self.uid}_{k}",
            "cart_id": f"fzcart_{self.uid}_{k}",
            "currency_code": "usd",
            "total": amount + 500,
            "shipping_total": 500,
            "tax_total": 0,
        }

    def templates(self) -> list[tuple[str, dict[str, Any], dict[str, list[Any]]]]:
        """(event name, a valid payload, {field: values that make it invalid})."""
        k = self.rng.randrange(10**9)
        order = self.good_order(k, 10000)
        order["items"] = [{"id": "i1", "product_id": "p1", "quantity": 1, "total": 10000}]
        refund = {
            "id": f"fzr_{self.uid}_{k}",
            "order_id": f"fzo_{self.uid}_{self.rng.randrange(GOOD_ORDERS)}",  # a good order
            "customer_id": f"fzc_{self.uid}_{k}",
            "amount": 100,
            "currency_code": "usd",
            "to_store_credit": True,
        }
        amounts = {f: NOT_AN_AMOUNT for f in ("total", "shipping_total", "tax_total")}
        amounts |= {f: NOT_AN_AMOUNT for f in ("dust_total", "store_credit_total")}
        return [
            ("customer.created", {"id": f"fzc_{self.uid}_{k}"}, {"id": NOT_AN_ID}),
            (
                "customer.created",
                {"id": f"fzc_{self.uid}_{k}", "group_ids": ["g1"]},
                {"group_ids": ["g1", 5, [None], {"a": 1}, ["x" * 201], ["\x00"]]},
            ),
            (
                "order.placed",
                order,
                {
                    "id": NOT_AN_ID,
                    "customer_id": [v for v in NOT_AN_ID if v is not None],
                    "cart_id": [v for v in NOT_AN_ID if v is not None],
                    "currency_code": NOT_A_CURRENCY,
                    **amounts,
                    "items": [
                        "items",
                        5,
                        {},
                        [1],
                        [None],
                        [{}],
                        [{"total": "5"}],
                        [{"total": 5.0}],
                        [{"total": -5}],
                        [{"total": 5, "quantity": 0}],
                        [{"total": 5, "quantity": 1.5}],
                        [{"total": 5, "product_id": ""}],
                        [{"total": 1}] * 1001,
                        nested(50),
                    ],
                },
            ),
            (
                "refund.created",
                refund,
                {
                    "id": NOT_AN_ID,
                    "order_id": NOT_AN_ID,
                    "customer_id": [v for v in NOT_AN_ID if v is not None],
                    "amount": NOT_A_POSITIVE_AMOUNT,
                    "currency_code": NOT_A_CURRENCY,
                    "to_store_credit": NOT_A_BOOL,
                },
            ),
            ("order.canceled", {"id": order["id"]}, {"id": NOT_AN_ID}),
            (
                "product.updated",
                {"id": f"fzp_{k}", "metadata": {"dust_only": True, "dust_price": 10}},
                {
                    "id": NOT_AN_ID,
                    "metadata": ["x", 5, [], {"dust_only": "yes"}, {"dust_price": 1.5}],
                },
            ),
        ]

    def required(self, name: str) -> list[str]:
        return {
            "customer.created": ["id"],
            "order.placed": ["id", "currency_code", "total"],
            "refund.created": ["id", "order_id", "amount", "currency_code", "to_store_credit"],
            "order.canceled": ["id"],
            "product.updated": ["id"],
        }[name]

    def payload_mutation(self) -> dict[str, Any]:
        name, data, bad = self.rng.choice(self.templates())
        data = copy.deepcopy(data)
        if self.rng.random() < 0.2:
            del data[self.rng.choice(self.required(name))]
        else:
            field = self.rng.choice(sorted(bad))
            data[field] = copy.deepcopy(self.rng.choice(bad[field]))
        if name == "order.placed" and self.rng.random() < 0.05:
            # no items, and shipping larger than the total
            data = {k: v for k, v in data.items() if k != "items"}
            data["total"] = 10000
            data["shipping_total"] = 10001
        return {
            "id": self.next_id(),
            "name": name,
            "occurred_at": "2026-11-20T10:00:00Z",
            "data": data,
        }

    def envelope_mutation(self) -> Any:
        good = {
            "id": self.next_id(),
            "name": "customer.created",
            "occurred_at": "2026-11-20T10:00:00Z",
            "data": {"id": f"fzc_{self.uid}_env_{self.n}"},
        }
        choice = self.rng.randrange(9)
        if choice == 0:
            good["id"] = self.rng.choice([5, "", "x" * 251, "a\x00b", "\n", [], {}, True, 1.5])
        elif choice == 1:
            good["name"] = self.rng.choice([5, "", "n" * 101, "order\x00placed", [], None, True])
            if good["name"] is None:
                del good["name"]
        elif choice == 2:
            good["data"] = self.rng.choice(["data", 5, [], None, True, nested(20), 1.5])
        elif choice == 3:
            good["occurred_at"] = self.rng.choice(
                [
                    "yesterday",
                    "2026-11-20T10:00:00",  # no offset
                    "2026-13-40T10:00:00Z",
                    "0001-01-01T00:00:00+01:00",
                    "9999-12-31T23:59:59Z",
                    "1969-12-31T23:59:59Z",
                    5,
                    1.7e9,
                    [],
                    "2026-11-20T10:00:00Z" + "0" * 100,
                ]
            )
        elif choice == 4:
            # no id, and none derivable (data.id missing or not a string)
            del good["id"]
            good["data"] = self.rng.choice([{}, {"id": 5}, {"id": ""}, {"id": None}])
        elif choice == 5:
            return self.rng.choice(
                [[], [good], 5, -1, 1.5, None, True, "", "null", nested(200), {"id": None}]
            )
        elif choice == 6:
            # invalid JSON text, published as a JSON string
            text_ = json.dumps(good)
            cut = self.rng.randrange(1, len(text_))
            return self.rng.choice(
                [
                    text_[:cut],
                    "{not json " + self.next_id(),
                    text_.replace('"', "'"),
                    text_ + "}",
                    "[" * 5000 + "]" * 5000,  # deeper than any JSON parser will go
                    '{"id": 1' + "0" * 5000 + "}",  # an integer too long to convert
                ]
            )
        elif choice == 7:
            text_ = self.rng.choice(ODD_TEXT)
            where = self.rng.randrange(3)
            if where == 0:
                good["id"] = f"{good['id']}{text_}" if "\ud800" in text_ or "\udfff" in text_ else 5
            elif where == 1:
                good["data"]["id"] = text_ if ("\ud800" in text_ or "\udfff" in text_) else []
            else:
                good["name"] = "customer.created" + "\x00"
        else:
            # larger than the 1 MB an envelope may be (a few only: they cost)
            if self.rng.random() < 0.05:
                good["data"]["padding"] = "p" * 1_100_000
            else:
                good["data"]["id"] = "x" * self.rng.choice([201, 5000, 100_000])
        return good

    def bad(self) -> Any:
        return self.payload_mutation() if self.rng.random() < 0.6 else self.envelope_mutation()


def expected_id(raw: Any) -> str:
    """The inbox id the worker gives what it receives (JSON-decoded on its side)."""
    text_ = json.dumps(raw)
    try:
        received = json.loads(text_)
    except (ValueError, RecursionError):
        received = raw
    return parse_envelope(received, datetime_now()).event_id


def datetime_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def rows_for(engine: Any, ids: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    stmt = text(
        "SELECT event_id, status, reason FROM dust_events WHERE event_id IN :ids"
    ).bindparams(bindparam("ids", expanding=True))
    with engine.connect() as connection:
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            for row in connection.execute(stmt, {"ids": chunk}).mappings():
                found[row["event_id"]] = dict(row)
    return found


def test_thousands_of_malformed_events_mixed_with_good_ones(dust, workers, engine, uid) -> None:
    pids = {w.name: w.pid for w in workers.workers}
    children = {w.name: w.pool_children() for w in workers.workers}
    last_entry = dust.scalar("SELECT COALESCE(MAX(id), 0) FROM dust_entries")
    generator = Generator(uid, SEED)

    good: list[dict[str, Any]] = []
    expected_dust: dict[str, int] = {}
    expected_credit: dict[str, int] = {}
    rng = random.Random(SEED + 1)
    for k in range(GOOD_ORDERS):
        base = rng.randrange(0, 50000)
        order = generator.good_order(k, base)
        customer = order["customer_id"]
        good.append(
            {
                "id": f"fzg_{uid}_c{k}",
                "name": "customer.created",
                "occurred_at": "2026-11-20T10:00:00Z",
                "data": {"id": customer, "email": "ok@example.com"},
            }
        )
        good.append(
            {
                "id": f"fzg_{uid}_o{k}",
                "name": "order.placed",
                "occurred_at": "2026-11-20T10:00:00Z",
                "data": order,
            }
        )
        refunded = 0
        if k % 3 == 0 and base:
            refunded = rng.randrange(1, base + 1)
            good.append(
                {
                    "id": f"fzg_{uid}_r{k}",
                    "name": "refund.created",
                    "occurred_at": "2026-11-20T10:00:00Z",
                    "data": {
                        "id": f"fzgr_{uid}_{k}",
                        "order_id": order["id"],
                        "amount": refunded,
                        "currency_code": "USD",
                        "to_store_credit": True,
                    },
                }
            )
            expected_credit[customer] = refunded
        expected_dust[customer] = (base - refunded) // 100

    bad = [generator.bad() for _ in range(BAD_COUNT)]
    bad_ids = sorted({expected_id(raw) for raw in bad})
    mixed = [*good, *bad]
    random.Random(SEED + 2).shuffle(mixed)

    started = time.monotonic()
    dust.publish(*mixed)
    good_rows = dust.wait_events([e["id"] for e in good], timeout=150)
    wait_queue_empty(timeout=120)
    elapsed = time.monotonic() - started

    # every good event applied, once
    assert {r["status"] for r in good_rows.values()} == {"processed"}, [
        r for r in good_rows.values() if r["status"] != "processed"
    ][:5]
    balances = {
        row["customer_id"]: row["balance"]
        for row in dust.rows(
            "SELECT customer_id, balance FROM dust_accounts"
            " WHERE kind = 'dust' AND customer_id LIKE :p",
            p=f"fzc_{uid}_%",
        )
    }
    assert {c: balances.get(c) for c in expected_dust} == expected_dust
    credits = {
        row["customer_id"]: row["balance"]
        for row in dust.rows(
            "SELECT customer_id, balance FROM dust_accounts"
            " WHERE kind = 'store_credit' AND customer_id LIKE :p",
            p=f"fzc_{uid}_%",
        )
    }
    assert credits == expected_credit

    # every bad one recorded rejected, with a reason
    bad_rows = rows_for(engine, bad_ids)
    missing = [i for i in bad_ids if i not in bad_rows]
    assert not missing, f"{len(missing)} bad events not recorded, e.g. {missing[:5]}"
    not_rejected = [r for r in bad_rows.values() if r["status"] != "rejected" or not r["reason"]]
    assert not not_rejected, not_rejected[:10]

    # nothing but the good events wrote entries; nothing of a bad one stayed
    new_entries = dust.rows(
        "SELECT event_id, COUNT(*) AS n FROM dust_entries WHERE id > :last GROUP BY event_id",
        last=last_entry,
    )
    good_ids = {e["id"] for e in good}
    assert {r["event_id"] for r in new_entries} <= good_ids
    assert dust.scalar(
        "SELECT COUNT(*) FROM dust_refunds WHERE refund_id LIKE :p", p=f"fzr_{uid}_%"
    ) == (0)
    assert dust.journal_disagreements() == []

    # the workers never died: same processes, same pool children
    assert {w.name: w.pid for w in workers.workers} == pids
    assert all(w.running() for w in workers.workers)
    assert {w.name: w.pool_children() for w in workers.workers} == children
    print(f"fuzz: {len(good)} good + {len(bad)} bad ({len(bad_ids)} ids) in {elapsed:.1f}s")


# -- raw broker messages ---------------------------------------------------------------------


class _MkdirWhenUnpickled:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (os.mkdir, (self.path,))


def _headers(task: Any = "dust.handle_event", **extra: Any) -> dict[str, Any]:
    task_id = str(uuid.uuid4())
    headers = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "timelimit": [None, None],
        "argsrepr": "",
        "kwargsrepr": "",
        "origin": "fuzz",
    }
    headers.update(extra)
    return headers


def _body(envelope: Any) -> str:
    return json.dumps([[envelope], {}, {"callbacks": None, "errbacks": None, "chain": None}])


def test_raw_messages_the_worker_cannot_take_are_refused(dust, workers, envelope, uid, tmp_path):
    pids = {w.name: w.pid for w in workers.workers}
    marker = tmp_path / "unpickled"
    customer = f"cus_raw_{uid}"
    # each would open this customer's account, were it ever applied
    inner = envelope("customer.created", {"id": customer})
    events_before = dust.scalar("SELECT COUNT(*) FROM dust_events")
    not_json = b'[["{\\"id\\": \\"' + uid.encode() + b'" not json at all \xff\xfe'
    pickled = pickle.dumps(
        [[inner | {"x": _MkdirWhenUnpickled(str(marker))}], {}, {}],
        protocol=pickle.HIGHEST_PROTOCOL,
    )
    not_json_bodies = [
        not_json,  # not even UTF-8
        b'[["' + uid.encode() + b'"], {}, {',  # cut short
        b"[" * 100_000 + b"]" * 100_000,  # deeper than the parser goes
        b'[["' + uid.encode() + b'"], {}, {}] trailing',
    ]
    wrong_shape_bodies = [
        json.dumps({"a": 1}),  # body not [args, kwargs, embed]
        json.dumps("hello"),
        json.dumps([1, 2]),
        json.dumps([[], {}, {}]),  # no envelope
        json.dumps([[inner, inner], {}, {}]),
        json.dumps([[], {"envelope": inner, "x": 1}, {}]),
    ]
    cases: list[tuple[bytes | str, str, dict[str, Any]]] = [
        *((body, "application/json", _headers()) for body in not_json_bodies),
        (b"", "application/json", _headers()),  # empty: refused, nothing to record
        (pickled, "application/x-python-serialize", _headers()),
        (_body(inner), "application/x-unknown", _headers()),
        (_body(inner), "application/json", _headers("dust.no_such_task")),
        (_body(inner), "application/json", _headers("dust.no_such_task", id=None)),
        (_body(inner), "application/json", _headers(["x"])),  # not a task name
        (_body(inner), "application/json", _headers({"a": 1})),
        (_body(inner), "application/json", _headers(5)),
        (_body(inner), "application/json", _headers(None)),
        (_body(inner), "application/json", {}),
        (_body(inner), "application/json", {"id": str(uuid.uuid4())}),  # no task header
        (_body(inner), "application/json", {"task": "dust.handle_event"}),  # no id header
        (_body(inner), "application/json", _headers(id=5)),
        (_body(inner), "application/json", _headers(id=["x"])),
        # JSON, but not dust.handle_event(envelope): recorded rejected (none applied)
        *((body, "application/json", _headers()) for body in wrong_shape_bodies),
        (_body(inner), "application/json", _headers(eta="not a date")),
        (_body(inner), "application/json", _headers(expires="never")),
    ]
    cases += [
        (_body(inner), "application/json", _headers(timelimit="soon")),
        (_body(inner), "application/json", _headers(timelimit=["a", None])),
        (_body(inner), "application/json", _headers(retries="many")),
    ]
    with Connection(BROKER_URL) as connection:
        producer = Producer(connection)
        exchange = Exchange(EVENTS_QUEUE, type="direct")
        for body, content_type, headers in cases:
            producer.publish(
                body,
                exchange=exchange,
                routing_key=EVENTS_QUEUE,
                content_type=content_type,
                content_encoding="utf-8"
                if content_type != "application/x-python-serialize"
                else "binary",
                headers=headers,
                serializer=None,
            )
    # the workers go on: a good event published afterwards is applied
    sentinel = envelope("customer.created", {"id": f"{customer}_after"})
    (row,) = dust.apply(sentinel, timeout=60).values()
    assert row["status"] == "processed"
    wait_queue_empty(timeout=60)
    time.sleep(1)

    assert not Path(marker).exists(), "the worker unpickled a message"
    assert dust.events([inner["id"]]) == {}, "a refused message was applied"
    assert dust.scalar("SELECT COUNT(*) FROM dust_accounts WHERE customer_id = :c", c=customer) == 0
    assert {w.name: w.pid for w in workers.workers} == pids
    assert all(w.running() for w in workers.workers)
    # what was recorded: each body that is not JSON, and each JSON body that is not
    # dust.handle_event(envelope), rejected with a reason; nothing else
    recorded = dust.rows(
        "SELECT event_id, status, reason, envelope FROM dust_events"
        " ORDER BY received_at DESC LIMIT :n",
        n=dust.scalar("SELECT COUNT(*) FROM dust_events") - events_before,
    )
    assert sentinel["id"] in {r["event_id"] for r in recorded}
    refused = [r for r in recorded if r["event_id"] != sentinel["id"]]
    undecodable = [r for r in refused if "takes exactly one argument" not in r["reason"]]
    wrong_shape = [r for r in refused if "takes exactly one argument" in r["reason"]]
    assert len(undecodable) == len(not_json_bodies), [r["reason"] for r in refused]
    assert len(wrong_shape) == len(wrong_shape_bodies), [r["reason"] for r in refused]
    for row in wrong_shape:
        assert row["status"] == "rejected" and row["event_id"].startswith("invalid:"), row
    assert sorted(r["envelope"] for r in wrong_shape) == sorted(
        json.dumps(json.loads(b), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        for b in wrong_shape_bodies
    )
    for row in undecodable:
        assert row["status"] == "rejected" and row["event_id"].startswith("invalid:"), row
        assert row["reason"].startswith("message body is not valid JSON"), row["reason"]
    shown = {r["envelope"] for r in undecodable}
    assert not_json.decode("utf-8", "backslashreplace") in shown
