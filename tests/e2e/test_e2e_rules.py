"""Earn rules through a real worker: rules added with the ``dust rules`` command, a group
change that arrives after the order it precedes, a campaign, pending dust that cannot be
reserved, a refund that takes it back from pending, ``dust expire --as-of`` releasing it,
and a welcome bonus once.

The rules touch only this test's events: a group of its own, a campaign for orders in
``xts`` (the ISO code for testing, which a store must name in ``DUST_EXTRA_CURRENCIES``:
only this test's worker and commands do), a welcome bonus in a window in 2031. Pending dust
needs ``DUST_PENDING_DAYS``: the session's workers are stopped for the test and a worker
with it runs instead (the next test's ``workers`` fixture starts them again).
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from .support import BIN, ROOT, Cluster, WorkerProcess, worker_env

pytestmark = [pytest.mark.services, pytest.mark.e2e]

#: xts is not a currency Dust takes unless named: the campaign's orders reach this test only.
ONLY_HERE = {"DUST_EXTRA_CURRENCIES": "xts"}


def dust_command(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(BIN / "dust"), *args, "--json"],
        cwd=ROOT,
        env=worker_env(**ONLY_HERE),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def pending_worker(cluster: Cluster, tmp_path: Path) -> Any:
    cluster.stop()
    env = {"DUST_PENDING_DAYS": "14", **ONLY_HERE}
    worker = WorkerProcess("rules", tmp_path / "rules.log", env=env)
    worker.start()
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()
        cluster.ensure_running()


def test_rules_through_a_real_worker(pending_worker: Any, client: Any, engine: Any, uid: str):
    from .support import Dust

    dust = Dust(client, engine)
    now = datetime.now(UTC).replace(microsecond=0)
    gold, customer = f"gold_{uid}", f"cus_{uid}"
    at = {name: (now + offset).isoformat() for name, offset in _times().items()}

    rule = dust_command(
        "rules", "add", "group-multiplier", gold, "2", "--starts", at["created"], "--reason", "e2e"
    )  # fmt: skip
    assert (rule["kind"], rule["group_id"], rule["multiplier"]) == ("group-multiplier", gold, "2")
    dust_command(
        "rules", "add", "campaign", "1.5", "--currency", "XTS", "--name", "e2e",
        "--starts", at["campaign_starts"], "--ends", at["campaign_ends"], "--reason", "e2e",
    )  # fmt: skip
    listed = dust_command("rules", "list")
    assert {rule["id"]} <= {r["id"] for r in listed}

    def event(n: int, name: str, when: str, data: dict[str, Any]) -> dict[str, Any]:
        return {"id": f"evt_{uid}_{n}", "name": name, "occurred_at": at[when], "data": data}

    order = {
        "id": f"order_{uid}",
        "customer_id": customer,
        "currency_code": "xts",
        "total": 10_999,
        "shipping_total": 999,
    }
    rows = dust.apply(
        event(1, "customer.created", "created", {"id": customer, "group_ids": []}),
        event(2, "order.placed", "placed", order),
    )
    assert rows[f"evt_{uid}_2"]["detail"]["earned"] == 150  # 10000 × 0.01 × 1.5
    # joined the group before the order was placed; the update arrives after it
    rows = dust.apply(event(3, "customer.updated", "joined", {"id": customer, "group_ids": [gold]}))
    assert rows[f"evt_{uid}_3"]["detail"] == {"regrouped_orders": {f"order_{uid}": 150}}
    assert dust.dust(customer) == {"balance": 300, "held": 0, "pending": 300, "available": 0}
    reply = dust.request("balance", customer_id=customer)
    assert reply["dust"] == {"balance": 300, "held": 0, "pending": 300, "available": 0}
    reserved = dust.request(
        "reserve", cart_id=f"cart_{uid}", customer_id=customer, amount=1, kind="dust"
    )
    assert reserved["status"] == "rejected", reserved

    refund = {"id": f"ref_{uid}", "order_id": order["id"], "amount": 5_000}
    refund |= {"currency_code": "xts", "to_store_credit": False}
    dust.apply(event(4, "refund.created", "refunded", refund))
    assert dust.dust(customer) == {"balance": 150, "held": 0, "pending": 150, "available": 0}
    earned = dust.rows(
        "SELECT earn_multiplier, earn_rules, earned, clawed_back FROM dust_orders"
        " WHERE order_id = :o",
        o=order["id"],
    )
    assert earned == [
        {
            "earn_multiplier": "3",
            "earn_rules": json.dumps(sorted(json.loads(earned[0]["earn_rules"]))),
            "earned": 300,
            "clawed_back": 150,
        }
    ]

    expired = dust_command("expire", "--as-of", (now + timedelta(days=14, hours=1)).isoformat())
    assert expired["lots"]["counts"]["released"] >= 150
    assert dust.dust(customer) == {"balance": 150, "held": 0, "pending": 0, "available": 150}

    # a welcome bonus, once, in a window only this test uses
    dust_command(
        "rules", "add", "welcome-bonus", "77", "--starts", "2031-01-01", "--ends", "2031-01-02",
        "--reason", "e2e",
    )  # fmt: skip
    newcomer = f"cus_{uid}_new"
    created = {"id": f"evt_{uid}_w1", "name": "customer.created"}
    created |= {"occurred_at": "2031-01-01T12:00:00Z", "data": {"id": newcomer}}
    again = created | {"id": f"evt_{uid}_w2", "occurred_at": "2031-01-01T13:00:00Z"}
    assert dust.apply(created)[created["id"]]["detail"] == {"welcome_bonus": 77}
    assert dust.apply(again)[again["id"]]["detail"] == {}
    assert dust.dust(newcomer)["balance"] == 77


def _times() -> dict[str, timedelta]:
    return {
        "created": -timedelta(hours=3),
        "joined": -timedelta(hours=2),
        "campaign_starts": -timedelta(hours=1),
        "placed": -timedelta(minutes=30),
        "refunded": -timedelta(minutes=10),
        "campaign_ends": timedelta(hours=1),
    }
