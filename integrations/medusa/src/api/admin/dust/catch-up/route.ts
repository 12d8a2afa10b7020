import type { AuthenticatedMedusaRequest, MedusaResponse } from "@medusajs/framework/http"
import { catchUp } from "../../../../lib/catch-up"
import { withDust } from "../../../../lib/http"
import type { AdminCatchUpType } from "../../../validators"

/** Run the catch-up now (body `{"since"?: ISO time}`; default: from the watermark). */
export const POST = async (req: AuthenticatedMedusaRequest<AdminCatchUpType>, res: MedusaResponse) => {
  await withDust(res, async () => {
    const since = req.validatedBody?.since ? new Date(req.validatedBody.since) : undefined
    res.json(await catchUp(req.scope, { since }))
  })
}
