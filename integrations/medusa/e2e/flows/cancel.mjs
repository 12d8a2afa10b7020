import assert from "node:assert/strict"
import * as L from "./lib.mjs"

export const flow = {
  name: "canceling an order returns the dust it charged and reverses what it earned",
  run: async () => {
    const since = new Date(Date.now() - 1000).toISOString()
    const c = await L.registerCustomer("cancel")
    const first = await L.earnFirst(c)
    const spend = 500
    const cartId = await L.prepareCart({ customer: c, items: [{ variant_id: L.VARIANT.normal, quantity: 1 }] })
    await L.store("POST", "/store/dust/apply-to-cart", {
      token: c.token,
      body: { cart_id: cartId, amount: spend, kind: "dust" },
    })
    const order = await L.completeCart(cartId, c)
    await L.waitForEvent(`order.placed:${order.id}`)
    const earn = L.expectedEarn(L.expectedOrder("usd", [{ product: "normal", quantity: 1 }]), { dust_total: spend })
    assert.equal((await L.dustBalance(c.id)).dust.balance, first.earned - spend + earn)

    // Captured first: Medusa refunds a captured payment when the order is canceled, and that
    // money goes back to the card, not to store credit.
    await L.captureAndRefund(order.id)
    await L.admin("POST", `/admin/orders/${order.id}/cancel`, { body: {} })
    await L.waitForEvent(`order.canceled:${order.id}`)
    // Medusa refunded the captured payment itself, emitting no payment.refunded: the catch-up,
    // which lists refunds, must not turn that refund into store credit either.
    const caught = await L.admin("POST", "/admin/dust/catch-up", { body: { since } })
    assert.deepEqual(caught.errors ?? [], [], `catch-up: ${JSON.stringify(caught)}`)
    await L.waitFor("Dust's queue to drain", L.redisQueueIdle)

    const bal = await L.dustBalance(c.id)
    assert.equal(bal.dust.balance, first.earned, "the charged dust is back and the earned dust is gone")
    assert.equal(bal.dust.held, 0)
    assert.deepEqual(bal.store_credit.filter((a) => a.balance !== 0), [], "no store credit for a cancel")
    await L.assertReconciled(assert)
    L.recordForRedelivery({
      flow: "cancel",
      events: [
        { name: "order.canceled", data: { id: order.id } },
        { name: "order.placed", data: { id: order.id } },
      ],
      envelopes: [`order.canceled:${order.id}`, `order.placed:${order.id}`],
      customer_id: c.id,
      snapshot: await L.snapshot(c.id),
    })
  },
}
