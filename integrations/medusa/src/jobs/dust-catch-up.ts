import type { MedusaContainer } from "@medusajs/framework/types"
import { catchUp } from "../lib/catch-up"

/**
 * Forwards what the subscribers missed (see lib/catch-up.ts). Also on demand:
 * POST /admin/dust/catch-up. `DUST_CATCH_UP_SCHEDULE=off` turns the scheduled runs off (a
 * cron whose next run is more than ~24.8 days away overflows the timer of Medusa's local
 * scheduler, which then fires about every second instead).
 */
export const CATCH_UP_SCHEDULE = process.env.DUST_CATCH_UP_SCHEDULE ?? "*/5 * * * *"
const OFF = ["off", "false", "0", "none"].includes(CATCH_UP_SCHEDULE.trim().toLowerCase())

export default async function dustCatchUp(container: MedusaContainer) {
  if (OFF) {
    return
  }
  await catchUp(container)
}

export const config = {
  name: "dust-catch-up",
  schedule: OFF ? "0 0 * * *" : CATCH_UP_SCHEDULE,
}
