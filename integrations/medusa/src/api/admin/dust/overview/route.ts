import type { AuthenticatedMedusaRequest, MedusaResponse } from "@medusajs/framework/http"
import { refused, withDust } from "../../../../lib/http"
import { dustService } from "../../../../lib/service"
import { AdminOverview, parseQuery } from "../../../validators"

/**
 * The admin's Dust page: the last reconciliation, the events that need attention or failed,
 * and what the store owes per currency (`dust.overview`, docs/CONTRACT.md §5.3).
 */
export const GET = async (req: AuthenticatedMedusaRequest, res: MedusaResponse) => {
  const query = parseQuery(AdminOverview, req.query)
  await withDust(res, async () => {
    const reply = await dustService(req.scope).client.request<Record<string, any>>("dust.overview", {
      limit: query.limit,
    })
    if (reply && "status" in reply) {
      return refused(res, reply)
    }
    res.json(reply)
  })
}
