import { describe, expect, it } from "vitest"
import { DustError, redeemValue } from "../src/dust/client"
import { dustToMinor, formatMinor } from "../src/dust/format"
import { BALANCE, DUST_DOWN, makeDust, mockFetch } from "./support"

describe("dust client", () => {
  it("calls the plugin's routes with the publishable key and the customer's token", async () => {
    const { calls } = mockFetch({ "GET /store/dust/balance": { status: 200, body: BALANCE } })
    const reply = await makeDust().balance()
    expect(reply.dust.available).toBe(1000)
    expect(calls[0].headers.get("x-publishable-api-key")).toBe("pk_test")
    expect(calls[0].headers.get("authorization")).toBe("Bearer customer-token")
  })

  it("sends the history's kind, limit and cursor", async () => {
    const { calls } = mockFetch({ "GET /store/dust/transactions": { status: 200, body: { entries: [], next: null } } })
    await makeDust().history({ limit: 5, before: "cursor-1" })
    const q = calls[0].url.searchParams
    expect([q.get("kind"), q.get("limit"), q.get("before")]).toEqual(["dust", "5", "cursor-1"])
  })

  it("asks for several products in one request and skips the request for none", async () => {
    const { calls } = mockFetch({
      "GET /store/dust/products": { status: 200, body: { products: [{ id: "p1", dust_only: true, dust_price: 500 }] } },
    })
    const dust = makeDust()
    expect(await dust.products([])).toEqual([])
    expect(calls).toHaveLength(0)
    await dust.products(["p1", "p2"])
    expect([...calls[0].url.searchParams.values()]).toEqual(["p1", "p2"])
  })

  it("posts apply-to-cart and deletes with the cart and kind", async () => {
    const { calls } = mockFetch({
      "POST /store/dust/apply-to-cart": { status: 200, body: { cart: { id: "cart_1" }, hold: {}, money_minor: "500", redeem_value: "1" } },
      "DELETE /store/dust/apply-to-cart": { status: 200, body: { cart: { id: "cart_1" }, released: 500 } },
    })
    const dust = makeDust()
    await dust.applyToCart("cart_1", 500)
    await dust.removeFromCart("cart_1", "dust")
    expect(calls[0].body).toEqual({ cart_id: "cart_1", amount: 500, kind: "dust" })
    expect(calls[1].method).toBe("DELETE")
    expect(Object.fromEntries(calls[1].url.searchParams)).toEqual({ cart_id: "cart_1", kind: "dust" })
  })

  it.each([
    [DUST_DOWN, "dust_unavailable", /Dust is not answering right now/],
    [{ status: 502, body: { type: "dust_failed", message: "boom" } }, "dust_failed", /could not complete/],
    [{ status: 401, body: { type: "unauthorized", message: "Unauthorized" } }, "unauthorized", /sign in again/],
    [{ status: 403, body: { type: "not_allowed", message: "x" } }, "not_allowed", /another customer/],
    [{ status: 400, body: { type: "insufficient_funds", message: "Not enough available" } }, "insufficient_funds", /do not have that much dust/],
    [
      { status: 400, body: { type: "invalid_data", message: "The cart costs less than that: apply at most 511 dust", max_amount: 511 } },
      "max_amount",
      /Apply at most 511 dust/,
    ],
    [{ status: 400, body: { type: "invalid_data", message: "The cart has nothing left to pay" } }, "invalid", /nothing left to pay/],
    [{ status: 500, body: { type: "unknown_error", message: "An unknown error occurred." } }, "unknown", /Something went wrong/],
    ["network-error" as const, "store_unavailable", /store is not answering/],
  ])("turns %j into a readable %s error", async (answer, code, message) => {
    mockFetch({ "GET /store/dust/balance": answer })
    const error = await makeDust().balance().catch((e) => e)
    expect(error).toBeInstanceOf(DustError)
    expect(error.code).toBe(code)
    expect(error.message).toMatch(message)
  })

  it("keeps the most dust a cart can take", async () => {
    mockFetch({
      "POST /store/dust/apply-to-cart": { status: 400, body: { type: "invalid_data", message: "The cart costs less than that: apply at most 511 dust" } },
    })
    const error = await makeDust().applyToCart("cart_1", 9000).catch((e) => e)
    expect(error.maxAmount).toBe(511)
  })
})

describe("money", () => {
  it("values dust by the currency's redeem value, rounded down", () => {
    expect(redeemValue(BALANCE, "USD")).toBe("1")
    expect(redeemValue(BALANCE, "jpy")).toBe("0.5")
    expect(dustToMinor(1001, "0.5")).toBe(500)
    expect(dustToMinor(3, "0.1")).toBe(0)
    expect(dustToMinor(30, "0.1")).toBe(3)
  })

  it("formats minor units by the currency's digits", () => {
    expect(formatMinor(12935, "usd")).toBe("$129.35")
    expect(formatMinor(1200, "jpy")).toBe("¥1,200")
    expect(formatMinor(12345, "kwd")).toMatch(/KWD\s?12\.345/)
  })
})
