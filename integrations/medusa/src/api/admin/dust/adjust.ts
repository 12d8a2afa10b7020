import type { AuthenticatedMedusaRequest, MedusaResponse } from "@medusajs/framework/http"
import { refused, withDust } from "../../../lib/http"
import { dustService } from "../../../lib/service"
import type { AdminAdjustType } from "../../validators"

/**
 * An admin credit or debit through Dust's audited `dust.admin.adjust`, with the admin user
 * as the actor. `idempotency_key` (optional) makes a retried request post once.
 */
export async function adjust(
  direction: "credit" | "debit",
  req: AuthenticatedMedusaRequest<AdminAdjustType>,
  res: MedusaResponse
) {
  await withDust(res, async () => {
    const body = req.validatedBody
    const kwargs: Record<string, unknown> = {
      customer_id: body.customer_id,
      direction,
      amount: body.amount,
      kind: body.kind,
      reason: body.reason,
      actor: `medusa-user:${req.auth_context.actor_id}`,
      create: direction === "credit",
    }
    if (body.currency_code) {
      kwargs.currency_code = body.currency_code
    }
    if (body.idempotency_key) {
      kwargs.idempotency_key = body.idempotency_key
    }
    const reply = await dustService(req.scope).client.request<Record<string, any>>("dust.admin.adjust", kwargs)
    if (reply?.status !== "ok") {
      return refused(res, reply ?? {})
    }
    res.json(reply)
  })
}
