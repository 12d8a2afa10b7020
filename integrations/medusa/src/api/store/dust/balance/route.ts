import type { AuthenticatedMedusaRequest, MedusaResponse } from "@medusajs/framework/http"
import { withDust } from "../../../../lib/http"
import { dustService } from "../../../../lib/service"

/** The signed-in customer's dust and store credit: Dust's `dust.balance` reply (with `redeem_values`). */
export const GET = async (req: AuthenticatedMedusaRequest, res: MedusaResponse) => {
  await withDust(res, async () => {
    const reply = await dustService(req.scope).client.request("dust.balance", {
      customer_id: req.auth_context.actor_id,
    })
    res.json(reply)
  })
}
