/**
 * A small client for the Dust plugin's store routes (`/store/dust/*`), on Medusa's JS SDK:
 * `sdk.client.fetch` adds the publishable key and the signed-in customer's token. Copy this
 * file with the components; it has no other dependency.
 *
 * Every failure is a `DustError` whose `message` is written for the customer: Dust not
 * answering (the route's 503) or the store not answering at all never ends in a blank page.
 */
import type Medusa from "@medusajs/js-sdk"

export type DustKind = "dust" | "store_credit"

export type StoreCreditBalance = {
  currency_code: string
  code: string | null
  balance: number
  held: number
  available: number
}

/** Dust's `dust.balance` reply: dust in whole dust, store credit in minor units. */
export type DustBalanceReply = {
  customer_id: string
  dust: { balance: number; held: number; pending?: number; available: number }
  store_credit: StoreCreditBalance[]
  /** money value of one dust in minor units, per currency (`default` for the others) */
  redeem_values: Record<string, string>
}

/** One ledger entry, as `dust history --json` shows it. */
export type DustEntry = {
  id: number | string
  created_at: string
  kind: DustKind
  currency_code: string | null
  direction: "credit" | "debit"
  amount: number
  balance_after: number
  reason: string | null
  reference_type: string | null
  reference_id: string | null
  event_id: string | null
  actor: string | null
  memo: string | null
  forgiven?: boolean
}

export type DustHistoryPage = { entries: DustEntry[]; next: string | null }

export type DustProduct = { id: string; dust_only: boolean; dust_price: number | null }

export type ApplyReply = {
  cart: Record<string, unknown>
  hold: Record<string, unknown>
  money_minor: string
  redeem_value: string | null
}

export type DustErrorCode =
  | "dust_unavailable" // the route's 503: Dust did not answer in time
  | "dust_failed" // the route's 502: Dust's worker failed the request
  | "store_unavailable" // Medusa itself did not answer (network error)
  | "unauthorized" // not signed in (401)
  | "not_allowed" // another customer's cart (403)
  | "insufficient_funds"
  | "max_amount" // the cart costs less than the amount
  | "invalid" // any other 400
  | "unknown"

const MESSAGES: Record<DustErrorCode, string> = {
  dust_unavailable:
    "Dust is not answering right now, so your dust cannot be shown or used. Nothing was charged: please try again in a moment.",
  dust_failed: "Dust could not complete this request. Please try again; if it keeps failing, contact the store.",
  store_unavailable: "The store is not answering. Check your connection and try again.",
  unauthorized: "Your session has ended. Please sign in again.",
  not_allowed: "This cart belongs to another customer.",
  insufficient_funds: "You do not have that much dust available.",
  max_amount: "The cart costs less than that.",
  invalid: "The store refused this request.",
  unknown: "Something went wrong. Please try again.",
}

export class DustError extends Error {
  constructor(
    readonly code: DustErrorCode,
    message: string,
    readonly status?: number,
    /** for `max_amount`: the most dust the cart can take */
    readonly maxAmount?: number
  ) {
    super(message)
    this.name = "DustError"
  }
}

/** Turns what `sdk.client.fetch` threw into a DustError with a message for people. */
export function toDustError(error: unknown): DustError {
  if (error instanceof DustError) {
    return error
  }
  const status = typeof (error as { status?: unknown })?.status === "number" ? (error as { status: number }).status : undefined
  const serverMessage = error instanceof Error ? error.message : ""
  if (status === undefined) {
    // fetch() itself failed: no answer, CORS refused, DNS...
    return new DustError("store_unavailable", MESSAGES.store_unavailable)
  }
  if (status === 503) return new DustError("dust_unavailable", MESSAGES.dust_unavailable, status)
  if (status === 502) return new DustError("dust_failed", MESSAGES.dust_failed, status)
  if (status === 401) return new DustError("unauthorized", MESSAGES.unauthorized, status)
  if (status === 403) return new DustError("not_allowed", MESSAGES.not_allowed, status)
  if (status === 400 || status === 404) {
    // The plugin's refusals are sentences for people ("Not enough available", "The cart
    // costs less than that: apply at most 511 dust"); Medusa's FetchError keeps only them.
    if (/not enough available/i.test(serverMessage)) {
      return new DustError("insufficient_funds", MESSAGES.insufficient_funds, status)
    }
    const most = /at most (\d+)/i.exec(serverMessage)
    if (most) {
      const max = Number(most[1])
      return new DustError("max_amount", `${MESSAGES.max_amount} Apply at most ${max} dust.`, status, max)
    }
    return new DustError("invalid", serverMessage ? `${MESSAGES.invalid} ${serverMessage}` : MESSAGES.invalid, status)
  }
  return new DustError("unknown", MESSAGES.unknown, status)
}

export type DustClient = ReturnType<typeof createDustClient>

export function createDustClient(sdk: Medusa) {
  async function call<T>(path: string, init?: Parameters<Medusa["client"]["fetch"]>[1]): Promise<T> {
    try {
      return await sdk.client.fetch<T>(path, init)
    } catch (error) {
      throw toDustError(error)
    }
  }

  return {
    /** The signed-in customer's dust and store credit. */
    balance: () => call<DustBalanceReply>("/store/dust/balance"),

    /** Ledger entries, newest first; pass the previous page's `next` as `before`. */
    history: (params: { kind?: DustKind; limit?: number; before?: string | null; currency_code?: string } = {}) =>
      call<DustHistoryPage>("/store/dust/transactions", {
        query: {
          kind: params.kind ?? "dust",
          limit: params.limit ?? 10,
          ...(params.before ? { before: params.before } : {}),
          ...(params.currency_code ? { currency_code: params.currency_code } : {}),
        },
      }),

    /** Dust settings of products (dust-only and their price in dust); unknown ids are left out. */
    products: async (ids: string[]): Promise<DustProduct[]> => {
      if (ids.length === 0) return []
      const { products } = await call<{ products: DustProduct[] }>("/store/dust/products", { query: { id: ids } })
      return products
    },

    /** Reserve `amount` (dust, or store-credit minor units) for the cart; 0 removes that kind. */
    applyToCart: (cartId: string, amount: number, kind: DustKind = "dust") =>
      call<ApplyReply>("/store/dust/apply-to-cart", { method: "POST", body: { cart_id: cartId, amount, kind } }),

    /** Remove Dust's credit lines from the cart (one kind, or all) and release the holds. */
    removeFromCart: (cartId: string, kind?: DustKind) =>
      call<{ cart: Record<string, unknown>; released: number }>("/store/dust/apply-to-cart", {
        method: "DELETE",
        query: { cart_id: cartId, ...(kind ? { kind } : {}) },
      }),

    /** Claim a guest refund's store credit (its code) for the signed-in customer. */
    claimStoreCredit: (code: string) =>
      call<Record<string, unknown>>("/store/dust/store-credit/claim", { method: "POST", body: { code } }),
  }
}

/** The money one dust is worth in `currency`, in minor units (as a decimal string). */
export function redeemValue(balance: Pick<DustBalanceReply, "redeem_values">, currency: string): string {
  const values = balance.redeem_values ?? {}
  return values[currency.toLowerCase()] ?? values.default ?? "1"
}
