import assert from "node:assert/strict"
import * as L from "./lib.mjs"

export const flow = {
  name: "a registered customer's checkout in the 8.875 % taxed region earns on its items net of tax",
  run: async () => {
    const c = await L.registerCustomer("earn")
    await L.waitForEvent(`customer.created:${c.id}`)

    const order = await L.checkout({ customer: c, items: [{ variant_id: L.VARIANT.normal, quantity: 3 }] })
    const want = L.expectedOrder("usd", [{ product: "normal", quantity: 3 }])
    assert.equal(want.raw.tax_total, "7.3635875") // the store really charges fractions of a cent

    const ev = await L.waitForEvent(`order.placed:${order.id}`)
    const data = ev.envelope.data
    assert.equal(data.customer_id, c.id)
    L.assertOrderPayload(assert, data, want)
    assert.equal(data.raw?.total, want.raw.total, "raw total travels beside the integer")
    assert.equal(data.raw?.tax_total, want.raw.tax_total, "raw tax_total travels beside the integer")

    const earn = L.expectedEarn(want)
    assert.equal(earn, L.earned(7797)) // 25.99 x 3 net of tax, not 84.89 with tax
    const bal = await L.dustBalance(c.id)
    assert.equal(bal.dust.balance, earn)
    assert.equal(bal.dust.held, 0)
    assert.equal(bal.dust.available, earn)

    const route = await L.store("GET", "/store/dust/balance", { token: c.token })
    assert.equal(route.dust.balance, earn, `GET /store/dust/balance: ${JSON.stringify(route)}`)
    const anon = await L.request("GET", "/store/dust/balance", { key: L.SEED.publishable_key })
    assert.equal(anon.status, 401, "the balance route needs a signed-in customer")

    await L.assertReconciled(assert)
    L.recordForRedelivery({
      flow: "taxed checkout",
      events: [
        { name: "customer.created", data: { id: c.id } },
        { name: "order.placed", data: { id: order.id } },
      ],
      envelopes: [`customer.created:${c.id}`, `order.placed:${order.id}`],
      customer_id: c.id,
      snapshot: await L.snapshot(c.id),
    })
  },
}
