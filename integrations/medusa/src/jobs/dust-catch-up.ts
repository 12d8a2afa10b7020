import type { MedusaContainer } from "@medusajs/framework/types"
import { catchUp } from "../lib/catch-up"

/** Forwards what the subscribers missed (see lib/catch-up.ts). Also on demand: POST /admin/dust/catch-up. */
export default async function dustCatchUp(container: MedusaContainer) {
  await catchUp(container)
}

export const config = {
  name: "dust-catch-up",
  schedule: process.env.DUST_CATCH_UP_SCHEDULE ?? "*/5 * * * *",
}
