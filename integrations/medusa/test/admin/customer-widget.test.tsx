// @vitest-environment jsdom
import { FetchError } from "@medusajs/js-sdk"
import { screen, waitFor, within } from "@testing-library/react"
import userEvent from "@testing-library/user-event"
import { beforeEach, describe, expect, it, vi } from "vitest"
import { renderWithQuery } from "./render"

const fetchMock = vi.hoisted(() => vi.fn())
vi.mock("../../src/admin/lib/sdk", () => ({ sdk: { client: { fetch: fetchMock } } }))

import { CustomerDustWidget } from "../../src/admin/widgets/customer-dust"

const customer = { id: "cus_1", email: "ada@example.com" } as any
const balance = {
  customer_id: "cus_1",
  dust: { balance: 310, held: 20, pending: 40, available: 250 },
  store_credit: [
    { currency_code: "usd", code: "SC-AAAA", balance: 12935, held: 0, available: 12935 },
    { currency_code: "jpy", code: "SC-BBBB", balance: 1200, held: 0, available: 1200 },
  ],
  redeem_values: { default: "1" },
}
const entry = (id: number, extra: Record<string, unknown> = {}) => ({
  id,
  created_at: "2026-12-01T10:00:00+00:00",
  kind: "dust",
  currency_code: null,
  direction: "credit",
  amount: 100 + id,
  balance_after: 310,
  reason: "earn",
  reference_type: "order",
  reference_id: `order_${id}`,
  event_id: `evt_${id}`,
  actor: null,
  memo: null,
  forgiven: false,
  ...extra,
})

type Route = (url: string, init?: any) => unknown
let routes: Record<string, Route>
let calls: { url: string; init?: any }[]

beforeEach(() => {
  calls = []
  routes = {
    "/admin/dust/balance/cus_1": () => balance,
    "/admin/dust/history/cus_1": () => ({
      entries: [entry(2, { actor: "medusa-user:usr_1", memo: "goodwill", reason: "admin_adjustment", event_id: null, reference_type: "admin", reference_id: "k1" }), entry(1)],
      next: null,
    }),
  }
  fetchMock.mockReset()
  fetchMock.mockImplementation(async (url: string, init?: any) => {
    calls.push({ url, init })
    const route = routes[url]
    if (!route) throw new Error(`unexpected ${url}`)
    return route(url, init)
  })
})

const unavailable = () => {
  throw new FetchError("Dust is not answering: no reply in 5000 ms", "Service Unavailable", 503)
}

describe("the customer widget", () => {
  it("shows dust, store credit as money and the latest entries", async () => {
    renderWithQuery(<CustomerDustWidget data={customer} />)
    expect(await screen.findByTestId("dust-balance")).toHaveProperty("textContent", "310 dust")
    expect(screen.getByTestId("dust-held").textContent).toBe("20 dust")
    expect(screen.getByTestId("dust-pending").textContent).toBe("40 dust")
    expect(screen.getByTestId("dust-available").textContent).toBe("250 dust")
    const credit = screen.getByTestId("dust-store-credit").textContent
    expect(credit).toContain("$129.35")
    expect(credit).toContain("¥1,200")
    const rows = await screen.findAllByTestId("dust-entry")
    expect(rows).toHaveLength(2)
    const first = within(rows[0]).getAllByRole("cell").map((c) => c.textContent)
    expect(first.slice(1)).toEqual(["dust", "+102 dust", "goodwill (admin_adjustment)", "medusa-user:usr_1", "admin:k1"])
    const second = within(rows[1]).getAllByRole("cell").map((c) => c.textContent)
    expect(second.slice(1)).toEqual(["dust", "+101 dust", "earn", "—", "evt_1"])
  })

  it("pages to older entries with Dust's cursor", async () => {
    routes["/admin/dust/history/cus_1"] = (_url, init) =>
      init.query.before === "CUR2"
        ? { entries: [entry(1)], next: null }
        : { entries: [entry(3), entry(2)], next: "CUR2" }
    renderWithQuery(<CustomerDustWidget data={customer} />)
    expect(await screen.findAllByTestId("dust-entry")).toHaveLength(2)
    await userEvent.click(screen.getByRole("button", { name: "Older" }))
    await waitFor(() => expect(screen.getAllByTestId("dust-entry")).toHaveLength(1))
    expect(calls.at(-1)!.init.query).toEqual({ kind: "dust", limit: 10, before: "CUR2" })
    await userEvent.click(screen.getByRole("button", { name: "Newer" }))
    await waitFor(() => expect(screen.getAllByTestId("dust-entry")).toHaveLength(2))
  })

  it("says Dust is not answering instead of a blank widget", async () => {
    routes["/admin/dust/balance/cus_1"] = unavailable
    routes["/admin/dust/history/cus_1"] = unavailable
    renderWithQuery(<CustomerDustWidget data={customer} />)
    const note = await screen.findByTestId("dust-balance-error")
    expect(note.textContent).toMatch(/^Dust is not answering right now\. Try again in a minute/)
    expect((await screen.findByTestId("dust-history-error")).textContent).toMatch(/Dust is not answering/)
    // The form is still there, and a retry asks again.
    expect(screen.getByTestId("dust-adjust-form")).toBeTruthy()
    routes["/admin/dust/balance/cus_1"] = () => balance
    await userEvent.click(within(note).getByRole("button", { name: "Try again" }))
    expect((await screen.findByTestId("dust-available")).textContent).toBe("250 dust")
  })

  it.each([
    ["", "goodwill", "Amount is required."],
    ["-5", "goodwill", "Amount must be positive: -5 is negative."],
    ["2.5", "goodwill", "Amount must be a whole number: 2.5 has a fraction."],
    ["ten", "goodwill", "Amount must be a whole number, like 250."],
    ["250", "   ", "A reason is required: it is kept with the entry."],
  ])("refuses amount %j with reason %j before asking Dust", async (amount, reason, message) => {
    renderWithQuery(<CustomerDustWidget data={customer} />)
    await screen.findByTestId("dust-available")
    if (amount) await userEvent.type(screen.getByLabelText("Amount (whole dust)"), amount)
    if (reason) await userEvent.type(screen.getByLabelText("Reason (kept with the entry)"), reason)
    await userEvent.click(screen.getByRole("button", { name: "Credit dust" }))
    expect(screen.getByTestId("dust-form-error").textContent).toBe(message)
    expect(calls.filter((c) => c.init?.method === "POST")).toEqual([])
  })

  it("credits through the admin route and shows Dust's answer", async () => {
    routes["/admin/dust/credit"] = (_url, init) => {
      routes["/admin/dust/balance/cus_1"] = () => ({ ...balance, dust: { ...balance.dust, balance: 560, available: 500 } })
      return {
        status: "ok",
        repeat: false,
        entry: entry(9, { amount: init.body.amount, balance_after: 560, memo: init.body.reason }),
        account: { available: 500 },
      }
    }
    renderWithQuery(<CustomerDustWidget data={customer} />)
    await screen.findByTestId("dust-available")
    await userEvent.type(screen.getByLabelText("Amount (whole dust)"), "250")
    await userEvent.type(screen.getByLabelText("Reason (kept with the entry)"), "  late delivery ")
    await userEvent.click(screen.getByRole("button", { name: "Credit dust" }))
    const done = await screen.findByTestId("dust-adjust-done")
    expect(done.textContent).toBe("Credited 250 dust (entry 9). Balance now 560 dust, 500 available.")
    const post = calls.find((c) => c.url === "/admin/dust/credit")!
    expect(post.init.method).toBe("POST")
    expect(post.init.body).toMatchObject({ customer_id: "cus_1", amount: 250, reason: "late delivery", kind: "dust" })
    expect(post.init.body.idempotency_key).toMatch(/^admin-widget:/)
    await waitFor(() => expect(screen.getByTestId("dust-available").textContent).toBe("500 dust"))
  })

  it("shows insufficient funds when Dust refuses a debit", async () => {
    routes["/admin/dust/debit"] = () => {
      throw new FetchError("insufficient funds: available 250, requested 1000", "Bad Request", 400)
    }
    renderWithQuery(<CustomerDustWidget data={customer} />)
    await screen.findByTestId("dust-available")
    await userEvent.click(screen.getByRole("combobox", { name: "Direction" }))
    await userEvent.click(await screen.findByRole("option", { name: "Debit (take dust)" }))
    await userEvent.type(screen.getByLabelText("Amount (whole dust)"), "1000")
    await userEvent.type(screen.getByLabelText("Reason (kept with the entry)"), "fraud")
    await userEvent.click(screen.getByRole("button", { name: "Debit dust" }))
    expect((await screen.findByTestId("dust-adjust-error")).textContent).toBe(
      "Dust refused: insufficient funds — only 250 available, 1000 requested."
    )
  })

  it("says Dust is not answering when a credit times out", async () => {
    routes["/admin/dust/credit"] = unavailable
    renderWithQuery(<CustomerDustWidget data={customer} />)
    await screen.findByTestId("dust-available")
    await userEvent.type(screen.getByLabelText("Amount (whole dust)"), "5")
    await userEvent.type(screen.getByLabelText("Reason (kept with the entry)"), "test")
    await userEvent.click(screen.getByRole("button", { name: "Credit dust" }))
    expect((await screen.findByTestId("dust-adjust-error")).textContent).toMatch(
      /^Dust is not answering right now, so nothing was changed/
    )
    // The values stay for a retry, with the same idempotency key.
    expect((screen.getByLabelText("Amount (whole dust)") as HTMLInputElement).value).toBe("5")
    await userEvent.click(screen.getByRole("button", { name: "Credit dust" }))
    const posts = calls.filter((c) => c.url === "/admin/dust/credit")
    expect(posts).toHaveLength(2)
    expect(posts[0].init.body.idempotency_key).toBe(posts[1].init.body.idempotency_key)
  })
})
