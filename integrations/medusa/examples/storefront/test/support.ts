/**
 * The components run against the real Medusa JS SDK and the real dust client; only the
 * network is replaced: `mockFetch` answers `fetch` by method and path like Medusa would.
 */
import Medusa from "@medusajs/js-sdk"
import { vi } from "vitest"
import { createDustClient } from "../src/dust/client"

type Answer = { status: number; body?: unknown } | "network-error"
type Route = Answer | ((url: URL, init: RequestInit) => Answer)

export type FetchCall = { method: string; url: URL; body: unknown; headers: Headers }

export function mockFetch(routes: Record<string, Route | Route[]>) {
  const calls: FetchCall[] = []
  const queues = new Map(Object.entries(routes).map(([k, v]) => [k, Array.isArray(v) ? [...v] : [v]]))
  const fetchMock = vi.fn(async (input: RequestInfo | URL, init: RequestInit = {}) => {
    const url = new URL(String(input))
    const method = (init.method ?? "GET").toUpperCase()
    const headers = new Headers(init.headers)
    calls.push({ method, url, body: init.body ? JSON.parse(String(init.body)) : undefined, headers })
    const key = `${method} ${url.pathname}`
    const queue = queues.get(key)
    if (!queue || queue.length === 0) {
      throw new Error(`unexpected request ${key}`)
    }
    const route = queue.length > 1 ? queue.shift()! : queue[0]
    const answer = typeof route === "function" ? route(url, init) : route
    if (answer === "network-error") {
      throw new TypeError("Failed to fetch")
    }
    return new Response(answer.body === undefined ? null : JSON.stringify(answer.body), {
      status: answer.status,
      headers: { "content-type": "application/json" },
    })
  })
  vi.stubGlobal("fetch", fetchMock)
  return { calls, fetchMock }
}

export function makeDust() {
  const sdk = new Medusa({
    baseUrl: "http://medusa.test",
    publishableKey: "pk_test",
    auth: { type: "jwt", jwtTokenStorageMethod: "memory" },
  })
  void sdk.client.setToken("customer-token")
  return createDustClient(sdk)
}

export const DUST_DOWN = {
  status: 503,
  body: { type: "dust_unavailable", message: "Dust is not answering: no reply to dust.balance within 5000 ms" },
}

export const BALANCE = {
  customer_id: "cus_1",
  dust: { balance: 1200, held: 200, pending: 0, available: 1000 },
  store_credit: [
    { currency_code: "usd", code: "SC-1", balance: 12935, held: 0, available: 12935 },
    { currency_code: "jpy", code: "SC-2", balance: 1200, held: 0, available: 1200 },
  ],
  redeem_values: { default: "1", jpy: "0.5" },
}

export function entry(overrides: Record<string, unknown> = {}) {
  return {
    id: 1,
    created_at: "2026-11-30T10:00:00+00:00",
    kind: "dust",
    currency_code: null,
    direction: "credit",
    amount: 250,
    balance_after: 250,
    reason: "adjustment",
    reference_type: "admin",
    reference_id: "user_1",
    event_id: null,
    actor: "user:user_1",
    memo: "welcome back",
    forgiven: false,
    ...overrides,
  }
}
