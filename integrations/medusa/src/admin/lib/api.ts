import { sdk } from "./sdk"

/** The plugin's admin routes (docs/CONTRACT.md §9.2) and the shapes Dust replies with. */

export type DustBalance = {
  customer_id: string
  dust: { balance: number; held: number; pending: number; available: number }
  store_credit: { currency_code: string; code: string | null; balance: number; held: number; available: number }[]
  redeem_values?: Record<string, string>
}

export type DustEntry = {
  id: number
  created_at: string
  kind: "dust" | "store_credit"
  currency_code: string | null
  direction: "credit" | "debit"
  amount: number
  balance_after: number
  reason: string
  reference_type: string | null
  reference_id: string | null
  event_id: string | null
  actor: string | null
  memo: string | null
  forgiven?: boolean
}

export type DustHistory = { entries: DustEntry[]; next: string | null }

export type DustAdjustment = { status: "ok"; repeat: boolean; entry: DustEntry & { customer_id?: string }; account: Record<string, unknown> }

export type DustEvent = {
  event_id: string
  name: string
  status: string
  reason: string | null
  occurred_at: string | null
  received_at: string
  attempts: number
}

export type DustReconciliation = {
  id: number
  ok: boolean
  as_of: string
  started_at: string
  finished_at: string | null
  checked: Record<string, unknown>
  discrepancy_count: number
  discrepancies: Record<string, unknown>[]
  repaired: boolean
  actor: string | null
}

export type DustOverview = {
  reconciliation: DustReconciliation | null
  events: DustEvent[]
  event_counts: { needs_attention: number; failed: number }
  owed: {
    dust: { outstanding: number; held: number; pending: number; accounts: number }
    currencies: {
      currency_code: string
      store_credit: { outstanding: number; held: number; accounts: number }
      redeem_value: string
      dust_value: number
    }[]
    redeem_values: Record<string, string>
  }
}

const enc = encodeURIComponent

export const dustApi = {
  balance: (customerId: string) => sdk.client.fetch<DustBalance>(`/admin/dust/balance/${enc(customerId)}`),
  history: (customerId: string, kind: "dust" | "store_credit", limit: number, before?: string | null) =>
    sdk.client.fetch<DustHistory>(`/admin/dust/history/${enc(customerId)}`, {
      query: { kind, limit, ...(before ? { before } : {}) },
    }),
  adjust: (
    direction: "credit" | "debit",
    body: { customer_id: string; amount: number; reason: string; kind: "dust" | "store_credit"; currency_code?: string; idempotency_key: string }
  ) => sdk.client.fetch<DustAdjustment>(`/admin/dust/${direction}`, { method: "POST", body }),
  overview: (limit = 20) => sdk.client.fetch<DustOverview>("/admin/dust/overview", { query: { limit } }),
  resolve: (eventId: string, reason: string) =>
    sdk.client.fetch<{ status: "ok"; event_id: string; previous: string }>(
      `/admin/dust/events/${enc(eventId)}/resolve`,
      { method: "POST", body: { reason } }
    ),
}

/**
 * A sentence for a failed call: Dust not answering (the routes' 503), Dust refusing
 * (insufficient funds, an unknown customer: 400/404 with Dust's reason), or anything else.
 * `write`: the call would have changed something (a credit, a resolve).
 */
export function errorMessage(error: unknown, { refusedBy = "Dust", write = false } = {}): string {
  const status = (error as { status?: number } | null)?.status
  const message = error instanceof Error ? error.message : String(error ?? "")
  if (status === 503) {
    return `Dust is not answering right now${write ? ", so nothing was changed" : ""}. Try again in a minute; if it lasts, check that Dust's workers are running.`
  }
  if (status === 502) {
    return `Dust could not complete the request: ${message}`
  }
  if (status === 401 || status === 403) {
    return "Your admin session has ended: sign in again."
  }
  if (status === 400 || status === 404 || status === 409) {
    return `${refusedBy} refused: ${humanize(message)}`
  }
  if (!status) {
    return `Could not reach the store's server: ${message || "network error"}.`
  }
  return `Something went wrong (${status}): ${message}`
}

function humanize(reason: string): string {
  const funds = /^insufficient funds: available (\d+), requested (\d+)/.exec(reason)
  if (funds) {
    return `insufficient funds — only ${funds[1]} available, ${funds[2]} requested.`
  }
  return reason
}
