import { test, after } from "node:test"
import assert from "node:assert/strict"
import * as L from "./lib.mjs"

after(() => L.restartMedusa())

test("an order whose event was dropped reaches Dust through the catch-up, once", async () => {
  const c = await L.registerCustomer("catchup")
  await L.waitForEvent(`customer.created:${c.id}`)
  const since = new Date(Date.now() - 1000).toISOString()
  await L.restartMedusa({ DUST_SKIP_EVENTS: "order.placed" })

  const order = await L.checkout({ customer: c, items: [{ variant_id: L.VARIANT.normal, quantity: 3 }] })
  await L.waitFor("Medusa to emit order.placed", async () =>
    L.medusaEvents((e) => e.name === "order.placed" && e.data?.id === order.id).length > 0,
  )
  await L.sleep(3000)
  assert.equal(await L.dustEvent(`order.placed:${order.id}`), null, "the subscriber did not forward it")

  await L.restartMedusa()
  const first = await L.admin("POST", "/admin/dust/catch-up", { body: { since } })
  await L.waitForEvent(`order.placed:${order.id}`)
  const want = L.expectedEarn(L.expectedOrder("usd", [{ product: "normal", quantity: 3 }]))
  const once = await L.snapshot(c.id)
  assert.equal(once.balance.dust.balance, want)

  const second = await L.admin("POST", "/admin/dust/catch-up", { body: { since } })
  await L.waitFor("Dust's queue to drain", L.redisQueueIdle)
  assert.deepEqual(await L.snapshot(c.id), once, "a second catch-up changes nothing")
  assert.ok(first.published?.["order.placed"] >= 1, `catch-up published the order: ${JSON.stringify(first)}`)
  assert.ok(second, "the second catch-up answered")
  await L.assertReconciled(assert)
})
