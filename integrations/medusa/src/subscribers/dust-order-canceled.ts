import type { SubscriberArgs, SubscriberConfig } from "@medusajs/framework"
import { forwardOrderCanceled } from "../lib/forward"
import { forwarding } from "../lib/subscriber"

export default async function dustOrderCanceled({ event, container }: SubscriberArgs<{ id: string }>) {
  await forwarding(container, "order.canceled", event.data.id, () => forwardOrderCanceled(container, event.data.id))
}

export const config: SubscriberConfig = {
  event: "order.canceled",
  context: { subscriberId: "dust-order-canceled" },
}
