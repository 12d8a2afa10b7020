/** The Medusa JS SDK, configured at build time from Vite's env (see .env.example). */
import Medusa from "@medusajs/js-sdk"
import { createDustClient } from "./dust/client"

export const config = {
  baseUrl: import.meta.env.VITE_MEDUSA_URL || "http://localhost:9000",
  publishableKey: import.meta.env.VITE_MEDUSA_PUBLISHABLE_KEY || "",
  regionId: import.meta.env.VITE_MEDUSA_REGION_ID || "",
}

export const sdk = new Medusa({
  baseUrl: config.baseUrl,
  publishableKey: config.publishableKey,
  auth: { type: "jwt", jwtTokenStorageMethod: "local" },
})

export const dust = createDustClient(sdk)
