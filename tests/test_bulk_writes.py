"""The set-based writes (``dust.models.bulk``): what they write, and how PostgreSQL finds
the rows an UPDATE changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from dust.models import Product
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
