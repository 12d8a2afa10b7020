"""The set-based writes (``dust.models.bulk``): what they write, and how PostgreSQL finds
the rows an UPDATE changes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from dust.ledger import journal
from dust.ledger.accounts import LOTS
from dust.models import Account, Product
from dust.models.bulk import _json_update, insert_rows, update_rows

WHEN = datetime(2026, 12, 1, tzinfo=UTC)


def products(n: int) -> list[dict[str, object]]:
    return [
        {"product_id": f"prod_{i:06d}", "dust_only": False, "occurred_at": WHEN, "updated_at": WHEN}
        for i in range(n)
    ]


def test_update_rows_sets_the_columns_of_the_rows_named_and_no_other(session: Session) -> None:
    insert_rows(session, Product.__table__, products(5))
    update_rows(
        session,
        Product.__table__,
        [
            {"product_id": "prod_000001", "dust_only": True, "dust_price": 700},
            {"product_id": "prod_000003", "dust_only": True, "dust_price": None},
        ],
        key="product_id",
    )
    rows = session.execute(
        select(Product.product_id, Product.dust_only, Product.dust_price).order_by(
            Product.product_id
        )
    ).all()
    assert [tuple(r) for r in rows] == [
        ("prod_000000", False, None),
        ("prod_000001", True, 700),
        ("prod_000002", False, None),
        ("prod_000003", True, None),
        ("prod_000004", False, None),
    ]


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.services)], indirect=True
)
def test_an_update_of_a_few_rows_looks_them_up_by_key_in_a_table_of_thousands(
    session: Session,
) -> None:
    # PostgreSQL estimates json_to_recordset at 100 rows; joined to a table it takes for
    # a few tens of thousands of rows, it read the whole table (a sequential scan)
    # rather than look up 100 keys in the index. The statement names the keys as an
    # array too, so the plan is an index lookup whatever the planner's statistics say.
    insert_rows(session, Product.__table__, products(20_000))
    session.execute(text("ANALYZE dust_products"))
    statement = _json_update(postgresql.dialect(), Product.__table__, ("dust_only",), "product_id")
    document = '[{"product_id": "prod_000007", "dust_only": true}]'
    plan = "\n".join(
        session.execute(text(f"EXPLAIN {statement.text}"), {"rows": document}).scalars()
    )
    assert "Seq Scan on dust_products" not in plan, plan
    assert "pk_dust_products" in plan, plan


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.services)], indirect=True
)
def test_a_runs_lots_are_looked_up_by_index_in_a_table_of_thousands(session: Session) -> None:
    # journal.load_lots: each account's first lots and the lots of the orders a run may
    # claw back. Selected as "id IN (those)", PostgreSQL joined them to the lots by
    # reading all 20,000 (a hash semi join), statistics fresh; "id = ANY(ARRAY(those))"
    # looks them up in the primary key.
    session.execute(
        text(
            "INSERT INTO dust_accounts (customer_id, kind, balance, held, created_at)"
            " SELECT 'cus_' || a, 'dust', 100, 0, now() FROM generate_series(1, 2000) AS a"
        )
    )
    session.execute(
        text(
            "INSERT INTO dust_entries (account_id, direction, amount, balance_after, reason,"
            " reference_type, reference_id, forgiven, created_at)"
            " SELECT id, 'credit', 10, 10 * n, 'earn', 'order', 'ord_' || id || '_' || n, 0, now()"
            " FROM dust_accounts, generate_series(1, 10) AS n"
        )
    )
    session.execute(
        text(
            "INSERT INTO dust_lots (account_id, entry_id, amount, remaining, expires_at,"
            " order_id, created_at)"
            " SELECT account_id, id, 10, 10,"
            " now() + split_part(reference_id, '_', 3)::int * interval '1 day', reference_id, now()"
            " FROM dust_entries"
        )
    )
    session.execute(text("ANALYZE dust_accounts, dust_entries, dust_lots"))
    accounts = list(session.scalars(select(Account.id).order_by(Account.id).limit(40)))
    orders = [f"ord_{a}_10" for a in accounts[:20]]  # each account's last lot to expire
    seen: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM dust_lots" in statement:
            seen.append((statement, parameters))

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", keep)
    try:
        with journal.deferred(session):
            journal.load_lots(session, accounts, orders)
            lots = session.info[LOTS]
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    assert all(len(lots[a].lots) == journal.LOT_PAGE for a in accounts[20:])
    assert all(len(lots[a].lots) == journal.LOT_PAGE + 1 for a in accounts[:20])  # + the order's
    [(statement, parameters)] = seen
    connection = session.connection().connection.driver_connection
    assert connection is not None
    plan = "\n".join(row[0] for row in connection.execute(f"EXPLAIN {statement}", parameters))
    assert "Seq Scan on dust_lots" not in plan, plan
