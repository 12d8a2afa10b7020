import assert from "node:assert/strict"
import * as L from "./lib.mjs"

export const flow = {
  name: "a gift-card item earns nothing",
  run: async () => {
    const c = await L.registerCustomer("gift")
    const order = await L.checkout({
      customer: c,
      items: [
        { variant_id: L.VARIANT.normal, quantity: 1 },
        { variant_id: L.VARIANT.gift_card, quantity: 1 },
      ],
    })
    const ev = await L.waitForEvent(`order.placed:${order.id}`)
    const items = ev.envelope.data.items
    const card = items.find((i) => i.product_id === L.SEED.products.gift_card.id)
    assert.ok(card, `the gift card is among the items: ${JSON.stringify(items)}`)
    assert.equal(card.is_giftcard, true)
    assert.ok(items.filter((i) => i !== card).every((i) => !i.is_giftcard))
    const bal = await L.dustBalance(c.id)
    assert.equal(bal.dust.balance, L.earned(2599), "only the shirt earns")
    await L.assertReconciled(assert)
    L.recordForRedelivery({
      flow: "gift card",
      events: [{ name: "order.placed", data: { id: order.id } }],
      envelopes: [`order.placed:${order.id}`],
      customer_id: c.id,
      snapshot: await L.snapshot(c.id),
    })
  },
}
