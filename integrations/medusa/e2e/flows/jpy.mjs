import assert from "node:assert/strict"
import * as L from "./lib.mjs"

export const flow = {
  name: "a jpy order earns on whole yen",
  run: async () => {
    const c = await L.registerCustomer("jpy")
    const order = await L.checkout({ customer: c, currency: "jpy", items: [{ variant_id: L.VARIANT.normal, quantity: 1 }] })
    const ev = await L.waitForEvent(`order.placed:${order.id}`)
    const want = L.expectedOrder("jpy", [{ product: "normal", quantity: 1 }])
    assert.equal(want.total, 3499) // yen have no minor unit: 2999 + 500, not x100
    L.assertOrderPayload(assert, ev.envelope.data, want, { currency_code: "jpy" })
    const bal = await L.dustBalance(c.id)
    assert.equal(bal.dust.balance, L.expectedEarn(want))
    assert.equal(bal.dust.balance, L.earned(2999))
    await L.assertReconciled(assert)
    L.recordForRedelivery({
      flow: "jpy",
      events: [{ name: "order.placed", data: { id: order.id } }],
      envelopes: [`order.placed:${order.id}`],
      customer_id: c.id,
      snapshot: await L.snapshot(c.id),
    })
  },
}
