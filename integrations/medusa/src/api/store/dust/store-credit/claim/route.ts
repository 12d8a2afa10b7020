import type { AuthenticatedMedusaRequest, MedusaResponse } from "@medusajs/framework/http"
import { refused, withDust } from "../../../../../lib/http"
import { dustService } from "../../../../../lib/service"
import type { StoreClaimType } from "../../../../validators"

/**
 * Claim an anonymous store-credit account (a guest refund's code) for the signed-in
 * customer: Dust moves its whole balance in one transaction; a code claims once.
 */
export const POST = async (req: AuthenticatedMedusaRequest<StoreClaimType>, res: MedusaResponse) => {
  await withDust(res, async () => {
    const customerId = req.auth_context.actor_id
    const reply = await dustService(req.scope).client.request<Record<string, any>>("dust.admin.claim", {
      code: req.validatedBody.code,
      customer_id: customerId,
      actor: `customer:${customerId}`,
      create: true,
    })
    if (reply?.status !== "ok") {
      return refused(res, reply ?? {})
    }
    res.json(reply)
  })
}
