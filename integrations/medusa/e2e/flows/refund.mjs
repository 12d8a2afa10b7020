import assert from "node:assert/strict"
import * as L from "./lib.mjs"

export const flow = {
  name: "an admin refund of $10.50 credits exactly 1050 of store credit and claws back exactly",
  run: async () => {
    const c = await L.registerCustomer("refund")
    const first = await L.earnFirst(c)
    const { payment_id, refund_id } = await L.captureAndRefund(first.order.id, 10.5)

    const ev = await L.waitForEvent(`refund.created:${refund_id}`)
    const data = ev.envelope.data
    assert.equal(data.order_id, first.order.id)
    assert.equal(data.customer_id, c.id)
    assert.equal(data.currency_code, "usd")
    assert.equal(data.amount, 1050)
    assert.equal(data.to_store_credit, true)

    const want = L.expectedOrder("usd", [{ product: "normal", quantity: 3 }])
    const bal = await L.dustBalance(c.id)
    assert.equal(bal.dust.balance, L.expectedEarn(want, { refunded: 1050 }), "clawed back to floor((7797 - 1050) x rate)")
    const usd = bal.store_credit.find((a) => a.currency_code === "usd")
    assert.ok(usd, `a usd store-credit account: ${JSON.stringify(bal)}`)
    assert.equal(usd.balance, 1050)
    assert.equal(usd.available, 1050)
    await L.assertReconciled(assert)
    L.recordForRedelivery({
      flow: "refund",
      events: [
        { name: "payment.refunded", data: { id: payment_id } },
        { name: "order.placed", data: { id: first.order.id } },
      ],
      envelopes: [`refund.created:${refund_id}`, `order.placed:${first.order.id}`],
      customer_id: c.id,
      snapshot: await L.snapshot(c.id),
    })
  },
}
