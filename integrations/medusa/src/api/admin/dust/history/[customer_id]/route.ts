import type { AuthenticatedMedusaRequest, MedusaResponse } from "@medusajs/framework/http"
import { refused, withDust } from "../../../../../lib/http"
import { dustService } from "../../../../../lib/service"
import { StoreTransactions, parseQuery } from "../../../../validators"

/**
 * A customer's ledger entries for the admin, newest first:
 * `?kind=dust|store_credit&currency_code=usd&limit=20&before=<next>` -> `{"entries", "next"}`.
 */
export const GET = async (req: AuthenticatedMedusaRequest, res: MedusaResponse) => {
  const query = parseQuery(StoreTransactions, req.query)
  await withDust(res, async () => {
    const kwargs: Record<string, unknown> = {
      customer_id: req.params.customer_id,
      kind: query.kind,
      limit: query.limit,
    }
    if (query.currency_code) {
      kwargs.currency_code = query.currency_code
    }
    if (query.before) {
      kwargs.before = query.before
    }
    const reply = await dustService(req.scope).client.request<Record<string, any>>("dust.history", kwargs)
    if (reply && "status" in reply) {
      return refused(res, reply)
    }
    res.json(reply)
  })
}
