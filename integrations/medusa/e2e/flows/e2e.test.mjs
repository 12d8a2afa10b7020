// The flows against a real Medusa and a real Dust worker (run.sh starts both). The independent
// flows run side by side (E2E_FLOW_CONCURRENCY, default 4); then every Medusa event they caused
// is delivered again; the catch-up flow, which restarts the store, runs last.
import { test } from "node:test"
import * as applyDust from "./apply-dust.mjs"
import * as cancel from "./cancel.mjs"
import * as catchUp from "./catch-up.mjs"
import * as checkoutEarns from "./checkout-earns.mjs"
import * as dustOnlyReturn from "./dust-only-return.mjs"
import * as giftCard from "./gift-card.mjs"
import * as guest from "./guest.mjs"
import * as jpy from "./jpy.mjs"
import * as redelivery from "./redelivery.mjs"
import * as refund from "./refund.mjs"

const independent = [checkoutEarns, applyDust, refund, cancel, dustOnlyReturn, guest, jpy, giftCard]
  .flatMap((m) => Object.values(m))
const concurrency = Number(process.env.E2E_FLOW_CONCURRENCY || 4)

test("flows through Medusa's store and admin APIs", { concurrency }, async (t) => {
  await Promise.all(independent.map((f) => t.test(f.name, f.run)))
})

test(redelivery.flow.name, redelivery.flow.run)

test(catchUp.flow.name, catchUp.flow.run)
