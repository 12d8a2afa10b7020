// Records every event of the flows that Medusa emits, one JSON line each in
// $E2E_WORK/medusa-events.jsonl, so the test can show what Medusa sent for each flow beside
// what the plugin published. Part of the test store only, not of the plugin.
import { appendFileSync } from "node:fs"
import { join } from "node:path"
import type { SubscriberArgs, SubscriberConfig } from "@medusajs/framework"

export default async function recordEvent({ event }: SubscriberArgs<Record<string, unknown>>) {
  const dir = process.env.E2E_WORK
  if (!dir) return
  const line = { at: new Date().toISOString(), name: event.name, data: event.data, metadata: event.metadata }
  appendFileSync(join(dir, "medusa-events.jsonl"), JSON.stringify(line) + "\n")
}

export const config: SubscriberConfig = {
  event: [
    "customer.created",
    "customer.updated",
    "product.created",
    "product.updated",
    "cart.created",
    "cart.updated",
    "order.placed",
    "order.updated",
    "order.canceled",
    "order.completed",
    "order.fulfillment_created",
    "order.return_requested",
    "order.return_received",
    "payment.captured",
    "payment.refunded",
  ],
  context: { subscriberId: "dust-e2e-record-events" },
}
