import type { AuthenticatedMedusaRequest, MedusaResponse } from "@medusajs/framework/http"
import type { AdminAdjustType } from "../../../validators"
import { adjust } from "../adjust"

export const POST = (req: AuthenticatedMedusaRequest<AdminAdjustType>, res: MedusaResponse) => adjust("credit", req, res)
