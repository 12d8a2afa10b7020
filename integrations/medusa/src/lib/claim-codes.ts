/**
 * A guest's refund to store credit opens an anonymous account in Dust, claimable with a
 * code. The plugin asks Dust for the codes of an order's refunds (`dust.order_refunds`) and
 * writes them on the order's metadata, so the store can tell the customer:
 * `dust_store_credit_code` (the latest) and `dust_store_credit_codes` (refund id -> code).
 */
import { ContainerRegistrationKeys, Modules } from "@medusajs/framework/utils"
import type { MedusaContainer } from "@medusajs/framework/types"
import { dustService } from "./service"

type Row = Record<string, any>

export const ORDER_REFUNDS_TASK = "dust.order_refunds"

/** Codes Dust has credited for these refunds, `{refund_id: code}` (refunds not credited yet are absent). */
export async function refundCodes(container: MedusaContainer, orderId: string): Promise<Record<string, string>> {
  const reply = await dustService(container).client.request<Row>(ORDER_REFUNDS_TASK, { order_id: orderId })
  const codes: Record<string, string> = {}
  for (const refund of (reply?.refunds ?? []) as Row[]) {
    if (refund.to_store_credit && typeof refund.code === "string" && refund.code) {
      codes[String(refund.refund_id)] = refund.code
    }
  }
  return codes
}

/**
 * Wait (up to `claimCodeWaitMs`) until Dust has credited the given refunds, then write their
 * codes on the order. Returns the codes written; an empty object when Dust has not credited
 * them yet (the catch-up tries again later).
 */
export async function recordGuestClaimCodes(
  container: MedusaContainer,
  order: Row,
  refundIds: string[],
  waitMs = dustService(container).options.claimCodeWaitMs
): Promise<Record<string, string>> {
  const deadline = Date.now() + waitMs
  let found: Record<string, string> = {}
  for (;;) {
    found = await refundCodes(container, order.id)
    if (refundIds.every((id) => found[id]) || Date.now() >= deadline) {
      break
    }
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
  const wanted = Object.fromEntries(Object.entries(found).filter(([id]) => refundIds.includes(id)))
  if (Object.keys(wanted).length === 0) {
    return {}
  }
  const metadata = { ...(order.metadata ?? {}) } as Row
  const known = { ...((metadata.dust_store_credit_codes as Row | undefined) ?? {}) }
  let changed = false
  for (const [id, code] of Object.entries(wanted)) {
    if (known[id] !== code) {
      known[id] = code
      changed = true
    }
  }
  if (!changed) {
    return wanted
  }
  metadata.dust_store_credit_codes = known
  metadata.dust_store_credit_code = wanted[refundIds[refundIds.length - 1]] ?? Object.values(wanted).pop()
  await container.resolve(Modules.ORDER).updateOrders(order.id, { metadata })
  container
    .resolve(ContainerRegistrationKeys.LOGGER)
    .info(`dust: store credit code of order ${order.id} written (${Object.keys(wanted).join(", ")})`)
  return wanted
}
