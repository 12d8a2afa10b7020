"""Hostile input through real workers (started as the Procfile starts them).

A stray ``LPUSH`` of anything that is not a kombu message, a message whose body does not
decode, an envelope nested far too deep, the same id with other content, a currency no
one uses, an id with a space at its end: each settles with a reason or lands in the
dead-letter list (``worker/dead_letters.py``), writes nothing, and never stops, loops or
holds back the worker; every good event beside them is applied exactly.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Producer

from .support import BIN, BROKER_URL, EVENTS_QUEUE, ROOT, wait_queue_empty, worker_env
from .test_fuzz_worker import _body, _headers

pytestmark = [pytest.mark.services, pytest.mark.e2e]


def kombu_item(envelope: Any, **changes: Any) -> bytes:
    """A message as kombu writes it on the Redis list, with ``changes`` made to it."""
    item: dict[str, Any] = {
        "body": "W10=",  # base64 of "[]"
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": _headers(),
        "properties": {
            "body_encoding": "base64",
            "delivery_info": {"exchange": EVENTS_QUEUE, "routing_key": EVENTS_QUEUE},
            "delivery_mode": 2,
            "delivery_tag": str(uuid.uuid4()),
            "priority": 0,
        },
    }
    item.update(changes)
    return json.dumps(item).encode()


def not_celery_items(uid: str) -> list[bytes]:
    """Items a stray LPUSH or a buggy client leaves on the list (none is kombu's)."""
    return [
        f"not json {uid}".encode(),
        json.dumps([1, 2, uid]).encode(),  # a JSON list
        json.dumps(f"a JSON string {uid}").encode(),
        b"",  # an empty string
        json.dumps({"id": uid, "body": "x"}).encode(),  # an object without properties
        kombu_item(None, body=f"!!! not base64 {uid} ~~"),  # a body that is not base64
        b"\xff\xfe" + uid.encode(),  # not UTF-8
    ]


def dead_letters() -> dict[str, dict[str, Any]]:
    r = redis.Redis.from_url(BROKER_URL)
    items = r.hgetall("dust.dead_letters.items")
    return {
        json.loads(record)["id"]: {**json.loads(record), "item": items.get(key)}
        for key, record in r.hgetall("dust.dead_letters").items()
    }


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "dust"), *args],
        cwd=ROOT,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def good_order(uid: str, k: int, total: int = 10500) -> dict[str, Any]:
    return {
        "id": f"hg_{uid}_{k}",
        "name": "order.placed",
        "occurred_at": "2026-11-20T10:00:00Z",
        "data": {
            "id": f"hgo_{uid}_{k}",
            "customer_id": f"hgc_{uid}_{k}",
            "currency_code": "usd",
            "total": total,
            "shipping_total": 500,
            "tax_total": 0,
        },
    }


def deep(levels: int) -> Any:
    value: Any = "deep"
    for _ in range(levels):
        value = {"x": value}
    return value


def push_raw(items: list[bytes]) -> None:
    r = redis.Redis.from_url(BROKER_URL)
    for item in items:
        r.lpush(EVENTS_QUEUE, item)


def test_items_that_are_not_celery_messages_go_to_dead_letters(dust, workers, uid):
    """Each used to stop the worker with "Unrecoverable error" (or drop its connection),
    and came back after the visibility timeout to stop the restarted one."""
    pids = {w.name: w.pid for w in workers.workers}
    offsets = {w.name: w.log_size() for w in workers.workers}
    before = set(dead_letters())
    bad = not_celery_items(uid)
    goods = [good_order(uid, k) for k in range(20)]
    for k, item in enumerate(bad):
        dust.publish(*goods[k * 2 : k * 2 + 2])
        push_raw([item])
    dust.publish(*goods[len(bad) * 2 :])
    rows = dust.wait_events([g["id"] for g in goods], timeout=60)
    assert {r["status"] for r in rows.values()} == {"processed"}
    wait_queue_empty(timeout=30)
    for good in goods:
        assert dust.dust(good["data"]["customer_id"])["balance"] == 100  # 10000 * 0.01

    new = {k: v for k, v in dead_letters().items() if k not in before}
    assert sorted(v["item"] for v in new.values()) == sorted(bad)  # as received, byte for byte
    assert all(v["reason"] and v["at"] and v["list"] == EVENTS_QUEUE for v in new.values())
    # the workers never stopped; each item was logged once, at ERROR
    assert {w.name: w.pid for w in workers.workers} == pids
    assert all(w.running() for w in workers.workers)
    logs = "".join(w.log_since(offsets[w.name]) for w in workers.workers)
    assert "Unrecoverable error" not in logs
    for dead_id in new:
        assert logs.count(f"dead-lettered {dead_id} ") == 1
        assert f"ERROR/MainProcess] dead-lettered {dead_id} " in logs

    # an operator sees them, drops one (audited) and requeues another (dead-lettered again)
    listed = json.loads(cli("dead-letters", "list", "--json").stdout)
    assert set(new) <= {d["id"] for d in listed["dead_letters"]}
    assert listed["count_ever"] >= len(new)
    first, second = sorted(new)[:2]
    done = cli("dead-letters", "drop", first, "--reason", "stray test push", "--actor", "ops")
    assert done.returncode == 0, done.stderr
    done = cli("dead-letters", "requeue", second, "--actor", "ops")
    assert done.returncode == 0, done.stderr
    audit = json.loads(cli("dead-letters", "list", "--audit", "--json").stdout)
    dropped = next(a for a in audit if a["id"] == first)
    assert (dropped["action"], dropped["actor"], dropped["action_reason"]) == (
        "drop",
        "ops",
        "stray test push",
    )
    assert dropped["action_at"] and dropped["item"] is not None
    assert cli("dead-letters", "drop", first, "--reason", "again").returncode == 1
    deadline = time.monotonic() + 30
    while not any(
        v["item"] == new[second]["item"] for k, v in dead_letters().items() if k != second
    ):
        assert time.monotonic() < deadline, "a requeued poison item was not dead-lettered again"
        time.sleep(0.1)
    assert all(w.running() for w in workers.workers)


def test_a_restarted_worker_with_poison_already_queued_keeps_running(dust, workers, uid):
    """Poison and good events queued while no worker runs: the workers start, take them
    together, and go on; nothing good is parked in ``unacked``."""
    for worker in workers.workers:
        worker.stop()
    try:
        bad = not_celery_items(uid)
        goods = [good_order(uid, k) for k in range(30)]
        deep_one = good_order(uid, 999)
        deep_one["data"]["extra"] = deep(500)
        for k, item in enumerate(bad):
            dust.publish(*goods[k * 3 : k * 3 + 3])
            push_raw([item])
        dust.publish(deep_one, *goods[len(bad) * 3 :])
        # raw Celery messages no client should send, among them
        with Connection(BROKER_URL) as connection:
            producer = Producer(connection)
            exchange = Exchange(EVENTS_QUEUE, type="direct")
            for body, headers in [
                (_body(good_order(uid, 1000)), _headers(["x"])),
                (_body(good_order(uid, 1001)), {"task": "dust.handle_event"}),
                (_body(good_order(uid, 1002)), _headers(timelimit="soon")),
                (_body(good_order(uid, 1003)), _headers("dust.no_such_task")),
            ]:
                producer.publish(
                    body,
                    exchange=exchange,
                    routing_key=EVENTS_QUEUE,
                    content_type="application/json",
                    content_encoding="utf-8",
                    headers=headers,
                    serializer=None,
                )
        before = set(dead_letters())
        offsets = {w.name: w.log_size() for w in workers.workers}
        workers.ensure_running()
        rows = dust.wait_events([g["id"] for g in goods] + [deep_one["id"]], timeout=90)
        wait_queue_empty(timeout=30)
        time.sleep(1)  # a worker that was to die of it would have by now
        assert all(w.running() for w in workers.workers)
        assert {rows[g["id"]]["status"] for g in goods} == {"processed"}
        assert rows[deep_one["id"]]["status"] == "rejected"
        assert "nested more than 32 levels deep" in rows[deep_one["id"]]["reason"]
        for good in goods:
            assert dust.dust(good["data"]["customer_id"])["balance"] == 100
        for k in (999, 1000, 1001, 1002, 1003):  # nothing written for the refused ones
            assert dust.dust(f"hgc_{uid}_{k}")["balance"] == 0
        new = {k: v for k, v in dead_letters().items() if k not in before}
        assert len(new) == len(bad) + 4
        assert sum(v["reason"].startswith("no such task") for v in new.values()) == 1
        logs = "".join(w.log_since(offsets[w.name]) for w in workers.workers)
        assert "Unrecoverable error" not in logs
        assert "could not reach the pool" not in logs
        assert "RecursionError" not in logs
    finally:
        workers.ensure_running()


def test_an_envelope_nested_500_deep_is_rejected_and_does_not_hold_back_its_batch(
    dust, workers, uid
):
    offsets = {w.name: w.log_size() for w in workers.workers}
    goods = [good_order(uid, k) for k in range(40)]
    bad = good_order(uid, 500)
    bad["data"]["extra"] = deep(500)
    dust.publish(*goods[:20], bad, *goods[20:])
    rows = dust.wait_events([g["id"] for g in goods] + [bad["id"]], timeout=60)
    assert rows[bad["id"]]["status"] == "rejected"
    assert rows[bad["id"]]["reason"] == "envelope nested more than 32 levels deep"
    assert {rows[g["id"]]["status"] for g in goods} == {"processed"}
    assert dust.dust(bad["data"]["customer_id"])["balance"] == 0
    wait_queue_empty(timeout=30)
    logs = "".join(w.log_since(offsets[w.name]) for w in workers.workers)
    assert "could not reach the pool" not in logs and "RecursionError" not in logs
    assert len(logs) < 2_000_000  # no hot loop of log lines


def test_the_same_id_with_other_content_is_listed_as_a_conflict(dust, workers, envelope, uid):
    first = envelope("customer.created", {"id": f"cus_cf_{uid}"})
    dust.apply(first)
    other = {**first, "data": {"id": f"cus_cf_{uid}", "email": "other@example.com"}}
    dust.publish(other)
    listed: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while not listed:
        assert time.monotonic() < deadline, "the conflict was never listed"
        done = cli("events", "--status", "conflict", "--json", "--limit", "1000")
        assert done.returncode == 0, done.stderr
        listed = [c for c in json.loads(done.stdout) if c["event_id"] == first["id"]]
        time.sleep(0.2)
    (conflict,) = listed
    assert conflict["name"] == "customer.created" and conflict["status"] == "conflict"
    assert conflict["first_content_hash"] != conflict["conflicting_content_hash"]
    assert conflict["received_at"]
    shown = json.loads(cli("events", "show", first["id"], "--json").stdout)
    assert shown["status"] == "processed"
    assert [c["conflicting_content_hash"] for c in shown["conflicts"]] == [
        conflict["conflicting_content_hash"]
    ]
    assert shown["conflicts"][0]["envelope"]["data"]["email"] == "other@example.com"
    report = json.loads(cli("reconcile", "--json").stdout)
    assert report["checked"]["events"]["conflict"] >= 1
    assert not [d for d in report["discrepancies"] if d.get("event_id") == first["id"]]


def test_a_currency_that_is_not_iso_4217_opens_no_account(dust, workers, uid):
    order = good_order(uid, 1)
    order["data"]["currency_code"] = "ZZZ"
    refund = {
        "id": f"hr_{uid}",
        "name": "refund.created",
        "occurred_at": "2026-11-20T10:00:00Z",
        "data": {
            "id": f"hrr_{uid}",
            "order_id": f"hgo_{uid}_1",
            "customer_id": f"hgc_{uid}_1",
            "amount": 500,
            "currency_code": "zzz",
            "to_store_credit": True,
        },
    }
    rows = dust.apply(order, refund)
    for row in rows.values():
        assert row["status"] == "rejected"
        assert "'zzz' is not ISO 4217" in row["reason"]
    assert dust.scalar("SELECT COUNT(*) FROM dust_accounts WHERE currency_code = 'zzz'") == 0
    assert dust.dust(f"hgc_{uid}_1")["balance"] == 0
    assert dust.store_credit(f"hgc_{uid}_1") == {}
    # a checkout request and an admin command are refused the same way
    reply = dust.request(
        "reserve",
        cart_id=f"cart_{uid}",
        customer_id=f"hgc_{uid}_1",
        amount=5,
        kind="store_credit",
        currency_code="zzz",
    )
    assert reply["status"] == "rejected" and "ISO 4217" in reply["detail"]
    done = cli(
        "credit", f"hgc_{uid}_1", "5", "--kind", "store_credit", "--currency", "zzz",
        "--reason", "test",
    )  # fmt: skip
    assert done.returncode != 0 and "ISO 4217" in done.stderr
    assert dust.scalar("SELECT COUNT(*) FROM dust_accounts WHERE currency_code = 'zzz'") == 0


def test_an_id_with_spaces_is_rejected_never_rewritten(dust, workers, uid):
    customer = f"cus_sp_{uid}"
    order = good_order(uid, 7)
    order["data"]["customer_id"] = f" {customer} "
    nul = good_order(uid, 8)
    nul["data"]["id"] = f"hgo_{uid}_8\x00"
    spaced_event = good_order(uid, 9)
    spaced_event["id"] = f"{spaced_event['id']} "
    rows = dust.apply(order, nul)
    for event in (order, nul):  # the spaced customer first: it used to be credited
        assert rows[event["id"]]["status"] == "rejected"
        assert "taken as sent" in rows[event["id"]]["reason"]
    dust.publish(spaced_event)
    deadline = time.monotonic() + 30
    while True:
        found = dust.rows(
            "SELECT status, reason FROM dust_events WHERE envelope LIKE :p", p=f"%hgo_{uid}_9%"
        )
        if found:
            break
        assert time.monotonic() < deadline, "the event with a spaced id was never recorded"
        time.sleep(0.1)
    assert found[0]["status"] == "rejected" and "taken as sent" in found[0]["reason"]
    assert dust.dust(customer)["balance"] == 0
    assert (
        dust.scalar(
            "SELECT COUNT(*) FROM dust_accounts WHERE customer_id LIKE :p", p=f"%{customer}%"
        )
        == 0
    )
