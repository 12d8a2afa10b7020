import { render, screen, within } from "@testing-library/react"
import userEvent from "@testing-library/user-event"
import { describe, expect, it, vi } from "vitest"
import { DustBalance } from "../src/dust/DustBalance"
import { BALANCE, DUST_DOWN, makeDust, mockFetch } from "./support"

describe("DustBalance", () => {
  it("shows available, balance, held, the money value and store credit", async () => {
    mockFetch({ "GET /store/dust/balance": { status: 200, body: BALANCE } })
    const onLoaded = vi.fn()
    render(<DustBalance dust={makeDust()} currency="usd" onLoaded={onLoaded} />)
    expect(await screen.findByTestId("dust-available")).toHaveTextContent("1,000 dust")
    const card = screen.getByTestId("dust-balance")
    expect(card).toHaveTextContent("(worth $10.00)")
    expect(screen.getByTestId("dust-balance-total")).toHaveTextContent("1,200 dust")
    expect(screen.getByTestId("dust-held")).toHaveTextContent("200 dust")
    expect(within(card).getByText(/\$129\.35 available/)).toBeInTheDocument()
    expect(within(card).getByText(/¥1,200 available/)).toBeInTheDocument()
    expect(onLoaded).toHaveBeenCalledWith(BALANCE)
  })

  it("values dust in yen at the yen's redeem value", async () => {
    mockFetch({ "GET /store/dust/balance": { status: 200, body: BALANCE } })
    render(<DustBalance dust={makeDust()} currency="jpy" />)
    expect(await screen.findByText(/worth ¥500/)).toBeInTheDocument()
  })

  it("says Dust is not answering instead of going blank, and tries again", async () => {
    mockFetch({ "GET /store/dust/balance": [DUST_DOWN, { status: 200, body: BALANCE }] })
    render(<DustBalance dust={makeDust()} currency="usd" />)
    const alert = await screen.findByRole("alert")
    expect(alert).toHaveTextContent("Dust is not answering right now")
    expect(screen.queryByTestId("dust-available")).not.toBeInTheDocument()
    await userEvent.click(within(alert).getByRole("button", { name: "Try again" }))
    expect(await screen.findByTestId("dust-available")).toHaveTextContent("1,000 dust")
    expect(screen.queryByRole("alert")).not.toBeInTheDocument()
  })

  it("says the store is not answering when the request fails outright", async () => {
    mockFetch({ "GET /store/dust/balance": "network-error" })
    render(<DustBalance dust={makeDust()} />)
    expect(await screen.findByRole("alert")).toHaveTextContent("The store is not answering")
  })

  it("reads again when refreshKey changes", async () => {
    const { calls } = mockFetch({
      "GET /store/dust/balance": [
        { status: 200, body: BALANCE },
        { status: 200, body: { ...BALANCE, dust: { balance: 700, held: 0, available: 700 } } },
      ],
    })
    const dust = makeDust()
    const { rerender } = render(<DustBalance dust={dust} refreshKey={0} />)
    expect(await screen.findByTestId("dust-available")).toHaveTextContent("1,000 dust")
    rerender(<DustBalance dust={dust} refreshKey={1} />)
    expect(await screen.findByText("700 dust", { selector: "[data-testid=dust-available]" })).toBeInTheDocument()
    expect(calls).toHaveLength(2)
  })
})
