import type { SubscriberArgs, SubscriberConfig } from "@medusajs/framework"
import { recordGuestClaimCodes } from "../lib/claim-codes"
import { forwardPaymentRefunds } from "../lib/forward"
import { dustCustomerId } from "../lib/mapping"
import { dustService } from "../lib/service"
import { forwarding } from "../lib/subscriber"

/**
 * `payment.refunded` names a payment: each of its refunds becomes one `refund.created`
 * (already-sent ones again, with the same id and content: Dust records them once). A
 * guest's refund to store credit gets a claim code from Dust, written on the order.
 */
export default async function dustPaymentRefunded({ event, container }: SubscriberArgs<{ id: string }>) {
  await forwarding(container, "payment.refunded", event.data.id, async () => {
    const { envelopes, order } = await forwardPaymentRefunds(container, event.data.id)
    const guest = dustCustomerId(order) === null
    if (guest && dustService(container).options.refundsToStoreCredit && envelopes.length > 0) {
      const refundIds = envelopes.map((e) => String(e.data.id))
      // The refunds are sent; a code that is not there yet is written by the catch-up.
      await recordGuestClaimCodes(container, order, refundIds).catch((error) =>
        container.resolve("logger").warn(`dust: claim code of order ${order.id} not written yet: ${error?.message ?? error}`)
      )
    }
  })
}

export const config: SubscriberConfig = {
  event: "payment.refunded",
  context: { subscriberId: "dust-payment-refunded" },
}
