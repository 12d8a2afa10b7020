import type { MedusaResponse } from "@medusajs/framework/http"
import { DustTaskFailed, DustUnavailable } from "./celery"

/**
 * Run a route's work; Dust not answering is a 503 (the storefront can retry), a request
 * Dust's worker failed is a 502. Everything else goes to Medusa's error handler.
 */
export async function withDust(res: MedusaResponse, work: () => Promise<unknown>): Promise<void> {
  try {
    await work()
  } catch (error) {
    if (error instanceof DustUnavailable) {
      res.status(503).json({ type: "dust_unavailable", message: `Dust is not answering: ${error.message}` })
      return
    }
    if (error instanceof DustTaskFailed) {
      res.status(502).json({ type: "dust_failed", message: error.message })
      return
    }
    throw error
  }
}

/** A reply Dust refused (`{"status": "error"|"rejected", ...}`), as a 400 (404 for an unknown customer). */
export function refused(res: MedusaResponse, reply: Record<string, any>): void {
  const reason = String(reply.reason ?? reply.detail ?? "refused by Dust")
  const status = reason.startsWith("unknown customer") ? 404 : 400
  res.status(status).json({ type: status === 404 ? "not_found" : "invalid_data", message: reason, dust: reply })
}
