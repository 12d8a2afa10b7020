import type { SubscriberArgs, SubscriberConfig } from "@medusajs/framework"
import { forwardReturnReceived } from "../lib/forward"
import { forwarding } from "../lib/subscriber"

/** A received return gives back the dust its dust-only items cost (`refund.created` with `dust_amount`). */
export default async function dustReturnReceived({
  event,
  container,
}: SubscriberArgs<{ order_id: string; return_id: string }>) {
  await forwarding(container, "order.return_received", event.data.return_id, () =>
    forwardReturnReceived(container, event.data.return_id)
  )
}

export const config: SubscriberConfig = {
  event: "order.return_received",
  context: { subscriberId: "dust-return-received" },
}
