"""Reconciliation finds each kind of tampering; ``--repair`` rebuilds caches, never entries.

Entries are append-only (triggers refuse UPDATE and DELETE), so the tests tamper the way
an intruder with database rights would: on PostgreSQL with ``session_replication_role =
replica`` (no triggers, no foreign keys), on SQLite by dropping the triggers of the test's
own copy of the database.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from conftest import Dust
from sqlalchemy import select, text

from dust.ledger import journal, reconcile
from dust.ledger.accounts import lock_accounts
from dust.models import JobRun, Reconciliation
from dust.models.base import utcnow
from dust.tasks import runs
from dust.worker import db as worker_db
from dust.worker.db import session_scope

ROOT = Path(__file__).resolve().parents[1]
DUST_BIN = Path(sys.executable).parent / "dust"


def tamper(sql: str, **params: Any) -> None:
    engine = worker_db.get_engine()
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SET LOCAL session_replication_role = replica"))
        else:
            connection.execute(text("DROP TRIGGER IF EXISTS dust_entries_no_update"))
            connection.execute(text("DROP TRIGGER IF EXISTS dust_entries_no_delete"))
        connection.execute(text(sql), params)


def check() -> dict[str, Any]:
    with session_scope(read_only=True) as session:
        return reconcile.reconcile(session)


def found(result: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [d for d in result["discrepancies"] if d["check"] == kind]


def dust_account(dust: Dust, customer_id: str, kind: str = "dust") -> int:
    return next(a.id for a in dust.accounts() if a.customer_id == customer_id and a.kind == kind)


def busy_ledger(dust: Dust) -> None:
    """A little of everything: earning, spending, a hold, store credit, a refund."""
    dust.send("customer.created", {"id": "cus_1"})
    dust.order("o1", "cus_1", 10000)
    dust.order("o2", "cus_2", 5000)
    dust.reserve("cus_1", "cart_9", 30)
    dust.order("o3", "cus_1", 2000, cart_id="cart_1", dust_total=20)
    dust.refund("r1", "o1", 4000)
    dust.grant("cus_3", 700, kind="store_credit", currency="usd")


def test_a_clean_ledger_is_ok_and_every_run_is_stored(dust: Dust) -> None:
    busy_ledger(dust)
    result = check()
    assert result["ok"], result["discrepancies"]
    assert result["checked"]["entries"] == dust.count("dust_entries")
    assert result["checked"]["accounts"] == dust.count("dust_accounts")

    run = runs.run_now("reconcile", utcnow(), actor="tester", chunk_size=1)
    assert run["status"] == "succeeded"
    assert run["counts"]["ok"] is True and run["counts"]["discrepancies"] == 0
    assert run["counts"]["chunks"] == dust.count("dust_accounts") + 1
    with session_scope() as session:
        record = session.get(Reconciliation, run["counts"]["reconciliation_id"])
        assert record is not None
        stored = reconcile.record_json(record)
    assert stored["ok"] and stored["actor"] == "tester" and stored["job_run_id"] == run["id"]
    assert stored["finished_at"] is not None and stored["discrepancies"] == []
    # the chunked run counted what the one-shot check counted
    for name in ("accounts", "entries", "holds", "lots", "orders", "events"):
        assert stored["checked"][name] == result["checked"][name], name


def test_a_tampered_cached_balance_is_found_and_repaired(dust: Dust) -> None:
    busy_ledger(dust)
    account = dust_account(dust, "cus_1")
    balance = dust.dust("cus_1")
    tamper("UPDATE dust_accounts SET balance = balance + 5 WHERE id = :id", id=account)

    result = check()
    assert not result["ok"]
    assert found(result, "balance") == [
        {"check": "balance", "account_id": account, "expected": balance, "actual": balance + 5}
    ]
    # the lots no longer match the (wrong) cached balance either
    assert [d["account_id"] for d in found(result, "lots")] == [account]
    entries_before = [(e.id, e.amount, e.balance_after) for e in dust.entries()]

    with session_scope() as session:
        changes = reconcile.repair_caches(session, [account])
    assert changes == [
        {"account_id": account, "column": "balance", "before": balance + 5, "after": balance}
    ]
    assert check()["ok"]
    assert [(e.id, e.amount, e.balance_after) for e in dust.entries()] == entries_before


def test_a_tampered_held_total_is_found_and_repaired(dust: Dust) -> None:
    busy_ledger(dust)
    account = dust_account(dust, "cus_1")
    held = dust.balance("cus_1")["dust"]["held"]
    tamper("UPDATE dust_accounts SET held = held + 7 WHERE id = :id", id=account)
    result = check()
    assert found(result, "held") == [
        {"check": "held", "account_id": account, "expected": held, "actual": held + 7}
    ]
    with session_scope() as session:
        changes = reconcile.repair_caches(session, [account])
    assert changes == [{"account_id": account, "column": "held", "before": held + 7, "after": held}]
    assert check()["ok"]


def test_a_deleted_entry_is_found_even_after_the_cache_is_fixed(dust: Dust) -> None:
    dust.grant("cus_1", 100, kind="store_credit", currency="usd")
    account = dust_account(dust, "cus_1", "store_credit")
    with session_scope() as session:
        locked = lock_accounts(session, [account])[account]
        journal.debit(session, locked, 30, journal.Ref("spend", "order", "o1"))
    dust.grant("cus_1", 50, kind="store_credit", currency="usd")
    debit, last = (e.id for e in dust.entries(account_id=account)[1:])
    tamper("DELETE FROM dust_entries WHERE id = :id", id=debit)

    result = check()
    assert found(result, "balance") == [
        {"check": "balance", "account_id": account, "expected": 150, "actual": 120}
    ]
    chain = [
        {
            "check": "journal_chain",
            "account_id": account,
            "entry_id": last,
            "expected": 150,
            "actual": 120,
        }
    ]
    assert found(result, "journal_chain") == chain

    # someone "fixes" the cache to the journal: the chain still gives the deletion away
    with session_scope() as session:
        reconcile.repair_caches(session, [account])
    result = check()
    assert found(result, "balance") == [] and found(result, "journal_chain") == chain
    assert not result["ok"]


def test_an_altered_entry_is_found_even_after_the_cache_is_fixed(dust: Dust) -> None:
    busy_ledger(dust)
    account = dust_account(dust, "cus_3", "store_credit")
    (entry,) = dust.entries(account_id=account)
    tamper("UPDATE dust_entries SET amount = amount + 1 WHERE id = :id", id=entry.id)
    result = check()
    assert found(result, "balance") == [
        {"check": "balance", "account_id": account, "expected": 701, "actual": 700}
    ]
    expected_chain = {
        "check": "journal_chain",
        "account_id": account,
        "entry_id": entry.id,
        "expected": 701,
        "actual": 700,
    }
    assert found(result, "journal_chain") == [expected_chain]
    tamper("UPDATE dust_accounts SET balance = 701 WHERE id = :id", id=account)
    result = check()
    assert found(result, "balance") == [] and found(result, "journal_chain") == [expected_chain]


def test_a_hold_left_active_past_its_expiry_is_found(dust: Dust) -> None:
    busy_ledger(dust)
    (hold_id,) = dust_hold_ids()
    tamper(
        "UPDATE dust_holds SET expires_at = :t WHERE id = :id",
        t=utcnow() - timedelta(days=1),
        id=hold_id,
    )
    stale = found(check(), "stale_hold")
    assert [(d["hold_id"], d["account_id"], d["expected"], d["actual"]) for d in stale] == [
        (hold_id, dust_account(dust, "cus_1"), "expired", "active")
    ]
    # the scheduled check allows the hold-expiry job its interval before calling it stale
    with session_scope() as session:
        recent = reconcile.check_stale_holds(session, utcnow(), grace_seconds=2 * 86400)
    assert recent == []


def dust_hold_ids() -> list[int]:
    with session_scope() as session:
        return list(session.scalars(text("SELECT id FROM dust_holds WHERE status = 'active'")))


def test_a_lot_total_that_disagrees_with_the_balance_is_found(dust: Dust) -> None:
    busy_ledger(dust)
    account = dust_account(dust, "cus_1")
    balance = dust.dust("cus_1")
    tamper(
        "UPDATE dust_lots SET remaining = remaining - 1"
        " WHERE id = (SELECT MIN(id) FROM dust_lots WHERE account_id = :id AND remaining > 0)",
        id=account,
    )
    assert found(check(), "lots") == [
        {"check": "lots", "account_id": account, "expected": balance, "actual": balance - 1}
    ]
    # rebuilding caches does not touch lots: still reported
    with session_scope() as session:
        assert reconcile.repair_caches(session, [account]) == []
    assert found(check(), "lots")
    # the ledger has to be put right by a person; keep the teardown invariants quiet
    tamper(
        "UPDATE dust_lots SET remaining = remaining + 1"
        " WHERE id = (SELECT MIN(id) FROM dust_lots WHERE account_id = :id)",
        id=account,
    )


def test_work_left_undone_is_not_ok(dust: Dust) -> None:
    dust.order("o1", "cus_1", 1000, dust_total=50)  # nothing to charge: needs attention
    result = check()
    assert not result["ok"]
    (event,) = found(result, "event")
    assert event["status"] == "needs_attention"


def test_the_stored_list_is_capped_but_the_count_is_complete(db: str) -> None:
    record = Reconciliation(checked="{}", discrepancies="[]", discrepancy_count=0, ok=True)
    many = [{"check": "balance", "account_id": n} for n in range(1500)]
    reconcile.add_to_record(record, {"accounts": 3}, many[:700])
    reconcile.add_to_record(record, {"accounts": 4}, many[700:])
    assert record.discrepancy_count == 1500 and not record.ok
    assert json.loads(record.discrepancies) == many[:1000]
    assert json.loads(record.checked) == {"accounts": 7}


# -- the command ------------------------------------------------------------------------


def dust_cli(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUST_")}
    env["DUST_DATABASE_URL"] = db
    return subprocess.run(
        [str(DUST_BIN), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_command_exits_0_when_clean_1_when_not_and_repairs(dust: Dust, db: str) -> None:
    busy_ledger(dust)
    clean = dust_cli(db, "reconcile", "--json")
    assert clean.returncode == 0, clean.stderr
    report = json.loads(clean.stdout)
    assert report["ok"] is True and report["discrepancies"] == []
    assert report["checked"]["entries"] == dust.count("dust_entries")

    account = dust_account(dust, "cus_1")
    balance = dust.dust("cus_1")
    tamper("UPDATE dust_accounts SET balance = 0 WHERE id = :id", id=account)
    dirty = dust_cli(db, "reconcile", "--json")
    assert dirty.returncode == 1, dirty.stderr
    report = json.loads(dirty.stdout)
    assert report["ok"] is False
    assert {"check": "balance", "account_id": account, "expected": balance, "actual": 0} in report[
        "discrepancies"
    ]
    text_out = dust_cli(db, "reconcile")
    assert text_out.returncode == 1 and "balance" in text_out.stdout

    repaired = dust_cli(db, "reconcile", "--repair", "--actor", "alice", "--json")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    report = json.loads(repaired.stdout)
    assert report["ok"] is True
    assert report["repairs"] == [
        {"account_id": account, "column": "balance", "before": 0, "after": balance}
    ]
    assert dust_cli(db, "reconcile").returncode == 0
    with session_scope() as session:
        record = session.scalar(select(Reconciliation).where(Reconciliation.repaired))
        assert record is not None and record.actor == "alice" and not record.ok
        assert json.loads(record.repairs or "[]") == report["repairs"]
        runs_recorded = session.scalar(
            select(text("count(*)")).select_from(JobRun).where(JobRun.job == "reconcile")
        )
        assert runs_recorded == 6  # clean, dirty, text, repair and its re-check, last


# -- the job's one pass gives what the checks give one by one ------------------------------


def one_by_one(session: Any, lo: int | None = None, hi: int | None = None) -> list[dict[str, Any]]:
    """The per-account checks run separately, one query each, as reconciliation once did:
    what ``check_accounts`` (one pass over the journal) must find, in the same order."""
    return [
        *reconcile.check_balances(session, lo, hi),
        *reconcile.check_journal_chain(session, lo, hi),
        *reconcile.check_held(session, lo, hi),
        *reconcile.check_lots(session, lo, hi),
        *reconcile.check_available(session, lo, hi),
        *reconcile.check_stale_holds(session, utcnow(), lo, hi),
    ]


def key(d: dict[str, Any]) -> tuple[Any, ...]:
    return (d["check"], d.get("account_id") or 0, d.get("entry_id") or d.get("hold_id") or 0)


def unsafe(db: str, *statements: str) -> None:
    """Change the database as no code path of Dust can: foreign keys, CHECK constraints and
    triggers off (SQLite: a plain connection, where foreign keys are off by default)."""
    if db.startswith("sqlite"):
        connection = sqlite3.connect(db.removeprefix("sqlite:///"))
        try:
            connection.execute("PRAGMA ignore_check_constraints = ON")
            connection.execute("DROP TRIGGER IF EXISTS dust_entries_no_update")
            connection.execute("DROP TRIGGER IF EXISTS dust_entries_no_delete")
            for statement in statements:
                connection.execute(statement)
            connection.commit()
        finally:
            connection.close()
        return
    with worker_db.get_engine().begin() as connection:
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        for statement in statements:
            connection.execute(text(statement))


def test_the_job_finds_what_the_checks_find_one_by_one_whatever_the_chunks(db: str) -> None:
    dust = Dust()
    for n in range(1, 9):
        dust.order(f"o{n}", f"cus_{n}", 1000 * n)
        dust.order(f"o{n}b", f"cus_{n}", 500)
        dust.grant(f"cus_{n}", 100 * n, kind="store_credit", currency="usd")
        dust.grant(f"cus_{n}", 10 * n, kind="store_credit", currency="usd")
    dust.reserve("cus_2", "cart_2", 3)
    dust.reserve("cus_5", "cart_5", 4)
    dust.send("customer.created", {"id": "cus_empty"})
    ids = {(a.customer_id, a.kind): a.id for a in dust.accounts()}
    sc = {n: ids[(f"cus_{n}", "store_credit")] for n in range(1, 9)}
    d = {n: ids[(f"cus_{n}", "dust")] for n in range(1, 9)}
    first = {n: dust.entries(account_id=d[n])[0].id for n in range(1, 9)}
    first_sc = {n: dust.entries(account_id=sc[n])[0].id for n in range(1, 9)}
    with session_scope() as session:
        hold_2 = session.scalar(text(f"SELECT id FROM dust_holds WHERE account_id = {d[2]}"))
    tamper("UPDATE dust_accounts SET balance = balance + 5 WHERE id = :id", id=d[1])
    tamper("UPDATE dust_accounts SET held = held + 2 WHERE id = :id", id=d[2])
    tamper("DELETE FROM dust_entries WHERE id = :id", id=first_sc[3])  # balance, chain
    # an altered entry with its cache "fixed": the chain alone gives it away
    tamper("UPDATE dust_entries SET amount = amount + 1 WHERE id = :id", id=first[4])
    tamper("UPDATE dust_accounts SET balance = balance + 1 WHERE id = :id", id=d[4])
    tamper(
        "UPDATE dust_lots SET remaining = remaining - 1"
        " WHERE id = (SELECT MIN(id) FROM dust_lots WHERE account_id = :id AND remaining > 0)",
        id=d[6],
    )
    tamper("UPDATE dust_accounts SET held = balance + 1 WHERE id = :id", id=d[7])  # available
    stale = utcnow() - timedelta(days=30)
    tamper("UPDATE dust_holds SET expires_at = :t WHERE id = :id", t=stale, id=hold_2)
    # every balance_after of an account rewritten: each entry breaks the chain
    tamper("UPDATE dust_entries SET balance_after = 1 WHERE account_id = :id", id=sc[8])

    with session_scope(read_only=True) as session:
        expected = one_by_one(session)
        checked, found_once = reconcile.check_accounts(session, utcnow())
    kinds = {x["check"] for x in expected}
    assert kinds == {"balance", "journal_chain", "held", "lots", "available", "stale_hold"}
    assert found_once == expected
    assert checked["entries"] == dust.count("dust_entries")
    assert checked["accounts"] == dust.count("dust_accounts")
    assert checked["holds"] == dust.count("dust_holds")

    for chunk in (1, 2, 3, 5, 1000):
        sink: list[dict[str, Any]] = []
        run = runs.run_now("reconcile", utcnow(), actor="tester", chunk_size=chunk, sink=sink)
        assert sorted(sink, key=key) == sorted(expected, key=key), chunk
        if chunk == 1000:  # one chunk: the same list, in the same order
            assert sink == expected
        assert run["counts"]["entries"] == dust.count("dust_entries")
        assert run["counts"]["accounts"] == dust.count("dust_accounts")
        assert run["counts"]["discrepancies"] == len(expected)
    # and over any range of accounts
    every = sorted(ids.values())
    with session_scope(read_only=True) as session:
        for lo, hi in [(every[0], every[3]), (every[4], every[4]), (every[5], every[-1])]:
            assert reconcile.check_accounts(session, utcnow(), lo, hi)[1] == one_by_one(
                session, lo, hi
            )


def test_entries_of_no_account_are_still_counted_and_chain_checked(db: str) -> None:
    dust = Dust()
    dust.send("customer.created", {"id": "cus_1"})
    dust.grant("cus_2", 70, kind="store_credit", currency="usd")
    dust.grant("cus_2", 30, kind="store_credit", currency="usd")
    dust.send("customer.created", {"id": "cus_3"})
    ids = [a.id for a in dust.accounts()]
    orphan = ids[1]
    _, last = (e.id for e in dust.entries(account_id=orphan))
    # the account row goes, its entries stay (foreign keys off); one entry is rewritten
    unsafe(
        db,
        f"DELETE FROM dust_accounts WHERE id = {orphan}",
        f"UPDATE dust_entries SET balance_after = 99 WHERE id = {last}",
    )
    chain = [
        {
            "check": "journal_chain",
            "account_id": orphan,
            "entry_id": last,
            "expected": 100,
            "actual": 99,
        }
    ]
    with session_scope(read_only=True) as session:
        # no account of the range has an entry: the orphans are found all the same
        checked, found_ = reconcile.check_accounts(session, utcnow(), ids[0], ids[2])
        assert found_ == one_by_one(session, ids[0], ids[2]) == chain
        assert checked == {"accounts": 2, "entries": 2, "holds": 0}
    sink: list[dict[str, Any]] = []
    run = runs.run_now("reconcile", utcnow(), chunk_size=2, sink=sink)
    assert sink == chain and run["counts"]["entries"] == 2


def test_a_lot_below_zero_is_found(db: str, backend: str) -> None:
    """The lots check sums open lots (an index finds them by account); a lot below zero,
    which a CHECK refuses, would escape that sum and is reported on its own."""
    dust = Dust()
    dust.grant("cus_1", 50)
    dust.grant("cus_1", 20)
    account = dust_account(dust, "cus_1")
    lot = min(dust_lot_ids())
    if backend == "postgresql":
        unsafe(db, "ALTER TABLE dust_lots DROP CONSTRAINT ck_dust_lots_remaining_range")
    try:
        # 50 + 20 = 70 = the balance; now -30 + 20 = -10 in all, 20 in open lots
        unsafe(db, f"UPDATE dust_lots SET remaining = -30 WHERE id = {lot}")
        result = check()
        assert not result["ok"]
        assert found(result, "lot_remaining") == [
            {
                "check": "lot_remaining",
                "account_id": account,
                "lot_id": lot,
                "expected": ">= 0",
                "actual": -30,
            }
        ]
        assert found(result, "lots") == [
            {"check": "lots", "account_id": account, "expected": 70, "actual": 20}
        ]
        sink: list[dict[str, Any]] = []
        runs.run_now("reconcile", utcnow(), chunk_size=1, sink=sink)
        assert sorted(sink, key=key) == sorted(result["discrepancies"], key=key)
    finally:
        unsafe(db, f"UPDATE dust_lots SET remaining = 50 WHERE id = {lot}")
        if backend == "postgresql":
            unsafe(
                db,
                "ALTER TABLE dust_lots ADD CONSTRAINT ck_dust_lots_remaining_range"
                " CHECK (remaining >= 0 AND remaining <= amount)",
            )
    assert check()["ok"]


def dust_lot_ids() -> list[int]:
    with session_scope() as session:
        return list(session.scalars(text("SELECT id FROM dust_lots")))
