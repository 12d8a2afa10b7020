import type { SubscriberArgs, SubscriberConfig } from "@medusajs/framework"
import { forwardCustomer } from "../lib/forward"
import { forwarding } from "../lib/subscriber"

export default async function dustCustomer({ event, container }: SubscriberArgs<{ id: string }>) {
  const name = event.name as "customer.created" | "customer.updated"
  await forwarding(container, name, event.data.id, () => forwardCustomer(container, name, event.data.id))
}

export const config: SubscriberConfig = {
  event: ["customer.created", "customer.updated"],
  context: { subscriberId: "dust-customer" },
}
