import type { SubscriberArgs, SubscriberConfig } from "@medusajs/framework"
import { forwardOrderPlaced } from "../lib/forward"
import { forwarding } from "../lib/subscriber"

export default async function dustOrderPlaced({ event, container }: SubscriberArgs<{ id: string }>) {
  await forwarding(container, "order.placed", event.data.id, () => forwardOrderPlaced(container, event.data.id))
}

export const config: SubscriberConfig = {
  event: "order.placed",
  context: { subscriberId: "dust-order-placed" },
}
