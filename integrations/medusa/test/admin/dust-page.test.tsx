// @vitest-environment jsdom
import { FetchError } from "@medusajs/js-sdk"
import { screen, waitFor, within } from "@testing-library/react"
import userEvent from "@testing-library/user-event"
import { beforeEach, describe, expect, it, vi } from "vitest"
import { renderWithQuery } from "./render"

const fetchMock = vi.hoisted(() => vi.fn())
vi.mock("../../src/admin/lib/sdk", () => ({ sdk: { client: { fetch: fetchMock } } }))

import { DustPage } from "../../src/admin/routes/dust/page"

const event = {
  event_id: "evt_refund_9",
  name: "refund.created",
  status: "needs_attention",
  reason: "refunds of order o_9 would add up to 1001, more than the 1000 it was paid",
  occurred_at: null,
  received_at: "2026-12-01T09:00:00+00:00",
  attempts: 1,
}
const overview = (events = [event]) => ({
  reconciliation: {
    id: 4,
    job_run_id: 7,
    ok: false,
    as_of: "2026-12-01T03:00:00+00:00",
    started_at: "2026-12-01T03:00:00+00:00",
    finished_at: "2026-12-01T03:00:01+00:00",
    checked: { accounts: 3 },
    discrepancy_count: 1,
    discrepancies: [{ check: "event", event_id: "evt_refund_9", reason: "still needs attention" }],
    repaired: false,
    repairs: null,
    actor: null,
  },
  events,
  event_counts: { needs_attention: events.length, failed: 0 },
  owed: {
    dust: { outstanding: 12500, held: 300, pending: 0, accounts: 42 },
    currencies: [
      { currency_code: "jpy", store_credit: { outstanding: 1200, held: 0, accounts: 1 }, redeem_value: "0.5", dust_value: 6250 },
      { currency_code: "usd", store_credit: { outstanding: 12935, held: 0, accounts: 3 }, redeem_value: "1", dust_value: 12500 },
    ],
    redeem_values: { default: "1", jpy: "0.5" },
  },
})

let current: any
let resolveReply: (body: any) => unknown
beforeEach(() => {
  current = overview()
  resolveReply = () => ({ status: "ok", event_id: event.event_id, previous: "needs_attention" })
  fetchMock.mockReset()
  fetchMock.mockImplementation(async (url: string, init?: any) => {
    if (url === "/admin/dust/overview") return typeof current === "function" ? current() : current
    if (url === `/admin/dust/events/${event.event_id}/resolve`) return resolveReply(init.body)
    throw new Error(`unexpected ${url}`)
  })
})

describe("the Dust page", () => {
  it("shows the last reconciliation, what is owed and the events with their reasons", async () => {
    renderWithQuery(<DustPage />)
    expect((await screen.findByTestId("dust-reconciliation-status")).textContent).toBe("1 discrepancy")
    expect(screen.getByTestId("dust-reconciliation").textContent).toContain("event: event evt_refund_9: still needs attention")
    expect(screen.getByTestId("dust-owed-dust").textContent).toBe("12,500 dust outstanding in 42 accounts, 300 held by carts")
    const usd = within(screen.getByTestId("dust-owed-usd")).getAllByRole("cell").map((c) => c.textContent)
    expect(usd).toEqual(["USD", "$129.35 (3 accounts)", "$125.00", "1 dust = 1 minor unit"])
    const jpy = within(screen.getByTestId("dust-owed-jpy")).getAllByRole("cell").map((c) => c.textContent)
    expect(jpy).toEqual(["JPY", "¥1,200 (1 account)", "¥6,250", "1 dust = 0.5 minor units"])
    const row = screen.getByTestId("dust-event")
    expect(row.textContent).toContain("refund.created")
    expect(row.textContent).toContain(event.reason)
  })

  it("resolves an event with a reason, and refuses an empty one", async () => {
    renderWithQuery(<DustPage />)
    await userEvent.click(await screen.findByRole("button", { name: "Resolve…" }))
    await userEvent.click(screen.getByRole("button", { name: "Resolve event" }))
    expect(screen.getByTestId("dust-form-error").textContent).toBe("A reason is required: it is kept with the entry.")
    expect(fetchMock.mock.calls.filter(([url]) => url.endsWith("/resolve"))).toEqual([])

    current = overview([])
    await userEvent.type(screen.getByLabelText("Why is it closed? (kept)"), "refunded by hand")
    await userEvent.click(screen.getByRole("button", { name: "Resolve event" }))
    await waitFor(() => expect(screen.getByTestId("dust-attention-none")).toBeTruthy())
    const call = fetchMock.mock.calls.find(([url]) => url.endsWith("/resolve"))!
    expect(call[1]).toEqual({ method: "POST", body: { reason: "refunded by hand" } })
  })

  it("shows Dust's refusal and Dust not answering when resolving", async () => {
    resolveReply = () => {
      throw new FetchError("event evt_refund_9 is processed: only needs_attention or failed", "Bad Request", 400)
    }
    renderWithQuery(<DustPage />)
    await userEvent.click(await screen.findByRole("button", { name: "Resolve…" }))
    await userEvent.type(screen.getByLabelText("Why is it closed? (kept)"), "dup")
    await userEvent.click(screen.getByRole("button", { name: "Resolve event" }))
    expect((await screen.findByTestId("dust-resolve-error")).textContent).toBe(
      "Dust refused: event evt_refund_9 is processed: only needs_attention or failed"
    )
    resolveReply = () => {
      throw new FetchError("Dust is not answering", "Service Unavailable", 503)
    }
    await userEvent.click(screen.getByRole("button", { name: "Resolve event" }))
    await waitFor(() =>
      expect(screen.getByTestId("dust-resolve-error").textContent).toMatch(/^Dust is not answering right now, so nothing was changed/)
    )
  })

  it("says Dust is not answering instead of a blank page, and retries", async () => {
    current = () => {
      throw new FetchError("Dust is not answering", "Service Unavailable", 503)
    }
    renderWithQuery(<DustPage />)
    const note = await screen.findByTestId("dust-overview-error")
    expect(note.textContent).toMatch(/^Dust is not answering right now/)
    current = overview()
    await userEvent.click(within(note).getByRole("button", { name: "Try again" }))
    expect((await screen.findByTestId("dust-reconciliation-status")).textContent).toBe("1 discrepancy")
  })

  it("says when no reconciliation ran yet and nothing needs attention", async () => {
    current = { ...overview([]), reconciliation: null }
    renderWithQuery(<DustPage />)
    expect((await screen.findByTestId("dust-reconciliation")).textContent).toContain("No reconciliation has run yet")
    expect(screen.getByTestId("dust-attention-none").textContent).toBe("Nothing needs attention.")
  })
})
