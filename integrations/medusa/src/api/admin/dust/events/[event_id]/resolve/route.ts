import type { AuthenticatedMedusaRequest, MedusaResponse } from "@medusajs/framework/http"
import { refused, withDust } from "../../../../../../lib/http"
import { dustService } from "../../../../../../lib/service"
import type { AdminResolveType } from "../../../../../validators"

/**
 * Close an event that needs attention or failed, with a reason, through Dust's audited
 * `dust.admin.resolve`; the admin user is the actor. (A correcting adjustment is a separate
 * credit or debit.)
 */
export const POST = async (req: AuthenticatedMedusaRequest<AdminResolveType>, res: MedusaResponse) => {
  await withDust(res, async () => {
    const reply = await dustService(req.scope).client.request<Record<string, any>>("dust.admin.resolve", {
      event_id: req.params.event_id,
      reason: req.validatedBody.reason,
      actor: `medusa-user:${req.auth_context.actor_id}`,
    })
    if (reply?.status !== "ok") {
      return refused(res, reply ?? {})
    }
    res.json(reply)
  })
}
