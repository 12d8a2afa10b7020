import assert from "node:assert/strict"
import * as L from "./lib.mjs"

// Runs last: it restarts the store with the plugin's order.placed subscriber off
// (DUST_SKIP_EVENTS), as if the event had been lost, and leaves it so; run.sh stops it.
export const flow = {
  name: "an order whose event was dropped reaches Dust through the catch-up, once",
  run: async () => {
    const c = await L.registerCustomer("catchup")
    await L.waitForEvent(`customer.created:${c.id}`)
    const since = new Date(Date.now() - 1000).toISOString()
    // The scheduled catch-up (every 5 minutes) must not run while the test shows the order
    // missing: once a day, twelve hours from now. (Not further: Medusa's scheduler waits with
    // one setTimeout, and a run more than 24.8 days away overflows it and fires every 1 ms.)
    const later = new Date(Date.now() + 12 * 3600_000)
    const daily = `${later.getUTCMinutes()} ${later.getUTCHours()} * * *`
    await L.restartMedusa({ DUST_SKIP_EVENTS: "order.placed", DUST_CATCH_UP_SCHEDULE: daily, TZ: "UTC" })

    const order = await L.checkout({ customer: c, items: [{ variant_id: L.VARIANT.normal, quantity: 3 }] })
    await L.waitFor("Medusa to emit order.placed", async () =>
      L.medusaEvents((e) => e.name === "order.placed" && e.data?.id === order.id).length > 0,
    )
    await L.sleep(3000)
    assert.equal(await L.dustEvent(`order.placed:${order.id}`), null, "the subscriber did not forward it")
    assert.equal(L.publishedCount(`order.placed:${order.id}`), 0)

    const first = await L.admin("POST", "/admin/dust/catch-up", { body: { since } })
    assert.ok(first.published?.["order.placed"] >= 1, `catch-up published the order: ${JSON.stringify(first)}`)
    await L.waitForEvent(`order.placed:${order.id}`)
    const want = L.expectedEarn(L.expectedOrder("usd", [{ product: "normal", quantity: 3 }]))
    const once = await L.snapshot(c.id)
    assert.equal(once.balance.dust.balance, want)

    // The second run finds the order in Dust already (or publishes it again: the same id).
    const second = await L.admin("POST", "/admin/dust/catch-up", { body: { since } })
    assert.deepEqual(second.errors ?? [], [], `second catch-up: ${JSON.stringify(second)}`)
    await L.waitFor("Dust's queue to drain", L.redisQueueIdle)
    assert.deepEqual(await L.snapshot(c.id), once, "a second catch-up changes nothing")
    await L.assertReconciled(assert)
  },
}
