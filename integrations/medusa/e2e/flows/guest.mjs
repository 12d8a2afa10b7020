import assert from "node:assert/strict"
import * as L from "./lib.mjs"

export const flow = {
  name: "a guest checkout earns nothing and fails nothing; a guest refund is store credit a customer can claim",
  run: async () => {
    const cartId = await L.prepareCart({ customer: null, items: [{ variant_id: L.VARIANT.normal, quantity: 1 }] })
    const order = await L.completeCart(cartId, null)
    const full = await L.adminOrder(order.id, "*customer")
    assert.equal(full.customer?.has_account, false, "Medusa made a customer without an account for the guest")

    const ev = await L.waitForEvent(`order.placed:${order.id}`)
    assert.equal(ev.envelope.data.customer_id, null, "a guest is sent as customer_id null")
    L.assertOrderPayload(assert, ev.envelope.data, L.expectedOrder("usd", [{ product: "normal", quantity: 1 }]))
    const guest = await L.dustBalance(full.customer.id)
    assert.equal(guest.dust.balance, 0)
    await L.assertReconciled(assert)

    const { payment_id, refund_id } = await L.captureAndRefund(order.id, 10.5)
    const rev = await L.waitForEvent(`refund.created:${refund_id}`)
    assert.equal(rev.envelope.data.customer_id ?? null, null)
    assert.equal(rev.envelope.data.amount, 1050)
    const code = await L.waitFor("the claim code on the order's metadata", async () => {
      const o = await L.adminOrder(order.id, "metadata")
      return o.metadata?.dust_store_credit_code
    })
    const c = await L.registerCustomer("claim")
    await L.store("POST", "/store/dust/store-credit/claim", { token: c.token, body: { code } })
    const bal = await L.dustBalance(c.id)
    assert.equal(bal.store_credit.find((a) => a.currency_code === "usd")?.balance, 1050)
    const again = await L.request("POST", "/store/dust/store-credit/claim", {
      key: L.SEED.publishable_key,
      token: c.token,
      body: { code },
    })
    assert.ok(again.status >= 400 && again.status < 500, `a code claims once: ${again.status}`)
    await L.assertReconciled(assert)
    L.recordForRedelivery({
      flow: "guest",
      events: [
        { name: "order.placed", data: { id: order.id } },
        { name: "payment.refunded", data: { id: payment_id } },
      ],
      envelopes: [`order.placed:${order.id}`, `refund.created:${refund_id}`],
      customer_id: c.id,
      snapshot: await L.snapshot(c.id),
    })
  },
}
