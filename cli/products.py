"""``dust products``: product dust settings (``set`` through a worker, ``list`` read here)."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy import select

from dust.cli import common, display
from dust.cli.common import ActorOption, JsonOption, console, fail, print_json
from dust.ledger import products
from dust.models import (
    Product,
)
from dust.worker.db import session_scope
from dust.worker.names import MAX_ID, SET_PRODUCT

app = typer.Typer(help="Product dust settings.", no_args_is_help=True)


# -- product settings ------------------------------------------------------------------


@app.command("set")
def products_set(
    product_id: Annotated[str, typer.Argument(help="The product.")],
    dust_only: Annotated[
        bool | None,
        typer.Option("--dust-only/--no-dust-only", help="Sold for dust only (earns nothing)."),
    ] = None,
    dust_price: Annotated[
        str | None, typer.Option("--dust-price", help="Price in dust (whole number).")
    ] = None,
    clear_dust_price: Annotated[
        bool, typer.Option("--clear-dust-price", help="Remove the dust price.")
    ] = False,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set a product's dust settings (what is not given stays as it is)."""
    product = product_id.strip()
    if not product or len(product) > MAX_ID:
        raise fail(f"PRODUCT_ID must be 1 to {MAX_ID} characters")
    price = common.whole(dust_price, "--dust-price", minimum=0) if dust_price is not None else None
    if price is not None and clear_dust_price:
        raise fail("give --dust-price or --clear-dust-price, not both")
    if dust_only is None and price is None and not clear_dust_price:
        raise fail(
            "nothing to set: give --dust-only/--no-dust-only, --dust-price or --clear-dust-price"
        )
    reply = common.call(
        SET_PRODUCT,
        {
            "product_id": product,
            "dust_only": dust_only,
            "dust_price": price,
            "clear_dust_price": clear_dust_price,
            "actor": common.actor(actor),
        },
    )
    if as_json:
        print_json(reply)
        return
    row = reply["product"]
    price_text = "none" if row["dust_price"] is None else str(row["dust_price"])
    typer.echo(
        f"{'created' if reply['created'] else 'updated'} {row['product_id']}:"
        f" dust_only={str(row['dust_only']).lower()} dust_price={price_text}"
    )


@app.command("list")
def products_list(
    dust_only: Annotated[
        bool, typer.Option("--dust-only", help="Only dust-only products.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Every product's dust settings."""

    stmt = select(Product).order_by(Product.product_id)
    if dust_only:
        stmt = stmt.where(Product.dust_only.is_(True))
    with session_scope(read_only=True) as session:
        rows = [products.product_json(p) for p in session.scalars(stmt)]
    if as_json:
        print_json(rows)
        return
    table = display.table("product", "dust only", "dust price", "as of", "set by")
    for row in rows:
        table.add_row(
            row["product_id"],
            "yes" if row["dust_only"] else "no",
            "" if row["dust_price"] is None else str(row["dust_price"]),
            row["occurred_at"][:19],
            row["set_by"] or "",
        )
    console.print(table)
