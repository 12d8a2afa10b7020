import type { AuthenticatedMedusaRequest, MedusaResponse } from "@medusajs/framework/http"
import { withDust } from "../../../../../lib/http"
import { dustService } from "../../../../../lib/service"

export const GET = async (req: AuthenticatedMedusaRequest, res: MedusaResponse) => {
  await withDust(res, async () => {
    res.json(await dustService(req.scope).client.request("dust.balance", { customer_id: req.params.customer_id }))
  })
}
