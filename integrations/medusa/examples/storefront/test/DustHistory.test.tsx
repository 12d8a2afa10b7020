import { render, screen, within } from "@testing-library/react"
import userEvent from "@testing-library/user-event"
import { describe, expect, it } from "vitest"
import { DustHistory } from "../src/dust/DustHistory"
import { DUST_DOWN, entry, makeDust, mockFetch } from "./support"

describe("DustHistory", () => {
  it("lists entries newest first with what they were, signed amounts and the balance after", async () => {
    mockFetch({
      "GET /store/dust/transactions": {
        status: 200,
        body: {
          entries: [
            entry({ id: 2, direction: "debit", amount: 500, balance_after: 500, reason: "spend", reference_type: "order", memo: null }),
            entry({ id: 1 }),
          ],
          next: null,
        },
      },
    })
    render(<DustHistory dust={makeDust()} />)
    const rows = await screen.findAllByTestId("dust-entry")
    expect(rows).toHaveLength(2)
    expect(rows[0]).toHaveTextContent("Paid an order")
    expect(rows[0]).toHaveTextContent("−500 dust")
    expect(rows[0]).toHaveTextContent("500 dust")
    expect(rows[1]).toHaveTextContent("Adjusted by the store: welcome back")
    expect(rows[1]).toHaveTextContent("+250 dust")
    expect(screen.queryByRole("button", { name: "Show more" })).not.toBeInTheDocument()
  })

  it("shows store credit as money", async () => {
    mockFetch({
      "GET /store/dust/transactions": {
        status: 200,
        body: { entries: [entry({ kind: "store_credit", currency_code: "usd", amount: 12935, balance_after: 12935, reason: "refund", memo: null })], next: null },
      },
    })
    render(<DustHistory dust={makeDust()} kind="store_credit" />)
    const [row] = await screen.findAllByTestId("dust-entry")
    expect(row).toHaveTextContent("Refund")
    expect(row).toHaveTextContent("+$129.35")
  })

  it("pages with the route's cursor", async () => {
    const { calls } = mockFetch({
      "GET /store/dust/transactions": (url) =>
        url.searchParams.get("before") === "c1"
          ? { status: 200, body: { entries: [entry({ id: 1, reason: "earn", memo: null })], next: null } }
          : { status: 200, body: { entries: [entry({ id: 2, reason: "welcome", memo: null })], next: "c1" } },
    })
    render(<DustHistory dust={makeDust()} pageSize={1} />)
    expect(await screen.findByText("Welcome gift")).toBeInTheDocument()
    await userEvent.click(screen.getByRole("button", { name: "Show more" }))
    expect(await screen.findByText("Earned on an order")).toBeInTheDocument()
    expect(screen.getAllByTestId("dust-entry")).toHaveLength(2)
    expect(calls.map((c) => c.url.searchParams.get("limit"))).toEqual(["1", "1"])
    expect(screen.queryByRole("button", { name: "Show more" })).not.toBeInTheDocument()
  })

  it("says there is nothing yet", async () => {
    mockFetch({ "GET /store/dust/transactions": { status: 200, body: { entries: [], next: null } } })
    render(<DustHistory dust={makeDust()} />)
    expect(await screen.findByText("No entries yet.")).toBeInTheDocument()
  })

  it("says Dust is not answering, and tries again", async () => {
    mockFetch({
      "GET /store/dust/transactions": [DUST_DOWN, { status: 200, body: { entries: [entry()], next: null } }],
    })
    render(<DustHistory dust={makeDust()} />)
    const alert = await screen.findByRole("alert")
    expect(alert).toHaveTextContent("Dust is not answering right now")
    await userEvent.click(within(alert).getByRole("button", { name: "Try again" }))
    expect(await screen.findAllByTestId("dust-entry")).toHaveLength(1)
  })
})
