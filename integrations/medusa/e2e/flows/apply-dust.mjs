import assert from "node:assert/strict"
import * as L from "./lib.mjs"

export const flow = {
  name: "a checkout that applies dust captures the hold and earns nothing on the dust-paid part",
  run: async () => {
    const c = await L.registerCustomer("spend")
    const first = await L.earnFirst(c)
    const spend = 500

    const cartId = await L.prepareCart({ customer: c, items: [{ variant_id: L.VARIANT.normal, quantity: 1 }] })
    const before = await L.getCart(cartId, c)
    await L.store("POST", "/store/dust/apply-to-cart", {
      token: c.token,
      body: { cart_id: cartId, amount: spend, kind: "dust" },
    })
    const held = await L.dustBalance(c.id)
    assert.equal(held.dust.held, spend)
    assert.equal(held.dust.available, first.earned - spend)
    const after = await L.getCart(cartId, c)
    assert.equal(L.toMinor(String(before.total), 2) - L.toMinor(String(after.total), 2), spend, "the cart's total drops by the dust's value")

    const order = await L.completeCart(cartId, c)
    const ev = await L.waitForEvent(`order.placed:${order.id}`)
    const want = L.expectedOrder("usd", [{ product: "normal", quantity: 1 }])
    L.assertOrderPayload(assert, ev.envelope.data, want, { dust_total: spend })

    const earn = L.expectedEarn(want, { dust_total: spend })
    assert.equal(earn, L.earned(2599 - spend))
    const bal = await L.dustBalance(c.id)
    assert.equal(bal.dust.balance, first.earned - spend + earn)
    assert.equal(bal.dust.held, 0, "the hold was captured")
    await L.assertReconciled(assert)
    L.recordForRedelivery({
      flow: "apply dust",
      events: [{ name: "order.placed", data: { id: order.id } }],
      envelopes: [`order.placed:${order.id}`],
      customer_id: c.id,
      snapshot: await L.snapshot(c.id),
    })
  },
}

export const flow2 = {
  name: "apply-to-cart refuses what is not a whole number or more than is available",
  run: async () => {
    const c = await L.registerCustomer("refuse")
    const first = await L.earnFirst(c)
    const cartId = await L.prepareCart({ customer: c, items: [{ variant_id: L.VARIANT.normal, quantity: 1 }] })
    for (const amount of [1.5, "10", -5]) {
      const res = await L.request("POST", "/store/dust/apply-to-cart", {
        key: L.SEED.publishable_key,
        token: c.token,
        body: { cart_id: cartId, amount, kind: "dust" },
      })
      assert.equal(res.status, 400, `amount ${JSON.stringify(amount)}: ${res.status} ${res.text.slice(0, 200)}`)
    }
    const tooMuch = await L.request("POST", "/store/dust/apply-to-cart", {
      key: L.SEED.publishable_key,
      token: c.token,
      body: { cart_id: cartId, amount: first.earned + 1, kind: "dust" },
    })
    assert.ok(tooMuch.status >= 400 && tooMuch.status < 500, `more than available: ${tooMuch.status} ${tooMuch.text.slice(0, 200)}`)
    const other = await L.registerCustomer("other")
    const foreign = await L.request("POST", "/store/dust/apply-to-cart", {
      key: L.SEED.publishable_key,
      token: other.token,
      body: { cart_id: cartId, amount: 1, kind: "dust" },
    })
    assert.ok([401, 403, 404].includes(foreign.status), `another customer's cart: ${foreign.status}`)
    const bal = await L.dustBalance(c.id)
    assert.equal(bal.dust.held, 0, "nothing held")
    assert.equal(bal.dust.balance, first.earned)
  },
}
