import assert from "node:assert/strict"
import * as L from "./lib.mjs"

// Runs after the other flows: every Medusa event they caused is emitted again through Medusa's
// event bus, so each plugin subscriber runs a second time; nothing in Dust may move.
export const flow = {
  name: "redelivering Medusa's events (every subscriber run twice) changes nothing in Dust",
  run: async () => {
    const flows = L.readRedelivery()
    const names = flows.map((f) => f.flow)
    for (const flow of ["taxed checkout", "apply dust", "refund", "cancel", "dust-only return", "guest", "jpy", "gift card"]) {
      assert.ok(names.includes(flow), `the ${flow} flow passed and recorded its events (have: ${names.join(", ")})`)
    }
    const events = flows.flatMap((f) => f.events)
    const envelopes = flows.flatMap((f) => f.envelopes)
    const before = Object.fromEntries(envelopes.map((id) => [id, L.publishedCount(id)]))
    await L.emitAgain(events)

    await L.waitFor("the plugin to publish every envelope again", async () =>
      envelopes.every((id) => L.publishedCount(id) > before[id]),
    )
    await L.waitFor("Dust's queue to drain", L.redisQueueIdle)
    for (const f of flows) {
      assert.deepEqual(await L.snapshot(f.customer_id), f.snapshot, `${f.flow}: balances and entries unchanged`)
    }
    for (const id of envelopes) {
      const ev = await L.dustEvent(id)
      assert.equal(ev?.status, "processed", `${id} still processed once`)
    }
    await L.assertReconciled(assert)
  },
}
