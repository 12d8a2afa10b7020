import assert from "node:assert/strict"
import * as L from "./lib.mjs"

export const flow = {
  name: "a dust-only product bought with dust, then returned, gives its dust back once",
  run: async () => {
    const c = await L.registerCustomer("return")
    const first = await L.earnFirst(c)
    const price = L.DUST_ONLY_PRICE

    // The seed created the product while the store ran: the plugin forwarded product.created.
    const productId = L.SEED.products.dust_only.id
    const pev = await L.waitForEvent(`product.created:${productId}`)
    assert.deepEqual(pev.envelope.data.metadata, { dust_only: true, dust_price: price })
    const known = (await L.dust("products", "list", "--dust-only", "--json")).find((p) => p.product_id === productId)
    assert.equal(known?.dust_price, price, "Dust knows the product is dust-only")

    const products = await L.store("GET", `/store/dust/products?id=${L.SEED.products.dust_only.id}`, { token: c.token })
    assert.match(JSON.stringify(products), new RegExp(`"dust_price":${price}\\b`), `GET /store/dust/products: ${JSON.stringify(products)}`)

    const cartId = await L.prepareCart({ customer: c, items: [{ variant_id: L.VARIANT.dust_only, quantity: 1 }] })
    await L.store("POST", "/store/dust/apply-to-cart", { token: c.token, body: { cart_id: cartId, amount: price, kind: "dust" } })
    const order = await L.completeCart(cartId, c)
    const ev = await L.waitForEvent(`order.placed:${order.id}`)
    const want = L.expectedOrder("usd", [{ product: "dust_only", quantity: 1 }])
    L.assertOrderPayload(assert, ev.envelope.data, want, { dust_total: price })
    assert.equal(L.expectedEarn(want, { dust_total: price }), 0)
    assert.equal((await L.dustBalance(c.id)).dust.balance, first.earned - price)

    // Medusa's return flow: fulfil, request the return, receive it.
    const full = await L.adminOrder(order.id, "*items")
    const item = full.items[0]
    await L.admin("POST", `/admin/orders/${order.id}/fulfillments`, {
      body: { items: [{ id: item.id, quantity: 1 }], location_id: L.SEED.stock_location_id },
    })
    const { return: ret } = await L.admin("POST", "/admin/returns", {
      body: { order_id: order.id, location_id: L.SEED.stock_location_id },
    })
    await L.admin("POST", `/admin/returns/${ret.id}/request-items`, { body: { items: [{ id: item.id, quantity: 1 }] } })
    await L.admin("POST", `/admin/returns/${ret.id}/request`, { body: {} })
    await L.admin("POST", `/admin/returns/${ret.id}/receive`, { body: {} })
    await L.admin("POST", `/admin/returns/${ret.id}/receive-items`, { body: { items: [{ id: item.id, quantity: 1 }] } })
    await L.admin("POST", `/admin/returns/${ret.id}/receive/confirm`, { body: {} })

    const rev = await L.waitForEvent(`refund.created:return:${ret.id}`)
    assert.equal(rev.envelope.data.dust_amount, price)
    assert.equal(rev.envelope.data.amount, 0)
    const bal = await L.dustBalance(c.id)
    assert.equal(bal.dust.balance, first.earned, "the dust paid for the returned item is back")
    await L.assertReconciled(assert)
    const returned = L.medusaEvents((e) => e.data?.return_id === ret.id || e.data?.id === ret.id)
    L.recordForRedelivery({
      flow: "dust-only return",
      events: [...returned.map((e) => ({ name: e.name, data: e.data })), { name: "order.placed", data: { id: order.id } }],
      envelopes: [`refund.created:return:${ret.id}`, `order.placed:${order.id}`],
      customer_id: c.id,
      snapshot: await L.snapshot(c.id),
    })
  },
}
