import type { SubscriberArgs, SubscriberConfig } from "@medusajs/framework"
import { forwardProduct } from "../lib/forward"
import { forwarding } from "../lib/subscriber"

export default async function dustProduct({ event, container }: SubscriberArgs<{ id: string }>) {
  const name = event.name as "product.created" | "product.updated"
  await forwarding(container, name, event.data.id, () => forwardProduct(container, name, event.data.id))
}

export const config: SubscriberConfig = {
  event: ["product.created", "product.updated"],
  context: { subscriberId: "dust-product" },
}
