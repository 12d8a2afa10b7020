import { render, screen } from "@testing-library/react"
import userEvent from "@testing-library/user-event"
import { describe, expect, it, vi } from "vitest"
import { ApplyDust, appliedDust, type CartWithCredit } from "../src/dust/ApplyDust"
import { DUST_DOWN, makeDust, mockFetch } from "./support"

const CART: CartWithCredit = { id: "cart_1", currency_code: "usd", credit_lines: [] }
const WITH_DUST: CartWithCredit = {
  id: "cart_1",
  currency_code: "usd",
  credit_lines: [{ reference: "dust", amount: 5, metadata: { dust_amount: 500 } }, { reference: "gift-card", amount: 3, metadata: {} }],
}

function setup(props: Partial<Parameters<typeof ApplyDust>[0]> = {}) {
  const onChange = vi.fn()
  render(<ApplyDust dust={makeDust()} cart={CART} available={1000} redeemValue="1" onChange={onChange} {...props} />)
  return { onChange, input: screen.getByRole("textbox", { name: "Dust to apply" }) }
}

async function apply(input: HTMLElement, text: string, button = "Apply dust") {
  await userEvent.clear(input)
  if (text) await userEvent.type(input, text)
  await userEvent.click(screen.getByRole("button", { name: button }))
}

describe("ApplyDust", () => {
  it("reads the dust applied from the cart's dust credit lines only", () => {
    expect(appliedDust(WITH_DUST)).toBe(500)
    expect(appliedDust(CART)).toBe(0)
  })

  it("applies whole dust to the cart and reports the change", async () => {
    const { calls } = mockFetch({
      "POST /store/dust/apply-to-cart": { status: 200, body: { cart: { id: "cart_1" }, hold: { status: "reserved" }, money_minor: "300", redeem_value: "1" } },
    })
    const { onChange, input } = setup()
    await apply(input, "300")
    expect(calls[0].body).toEqual({ cart_id: "cart_1", amount: 300, kind: "dust" })
    expect(onChange).toHaveBeenCalledTimes(1)
    expect(screen.queryByRole("alert")).not.toBeInTheDocument()
  })

  it.each([
    ["", /whole number of dust greater than 0/],
    ["1.5", /whole number/],
    ["-5", /whole number/],
    ["0", /greater than 0/],
    ["ten", /whole number/],
    ["1001", /You have 1,000 dust available/],
  ])("refuses %j in the form without calling the store", async (text, message) => {
    const { fetchMock } = mockFetch({})
    const { onChange, input } = setup()
    await apply(input, text)
    expect(await screen.findByRole("alert")).toHaveTextContent(message)
    expect(input).toHaveAttribute("aria-invalid", "true")
    expect(fetchMock).not.toHaveBeenCalled()
    expect(onChange).not.toHaveBeenCalled()
  })

  it("asks for at least what the dust-only items cost, and proposes it", async () => {
    const { fetchMock } = mockFetch({})
    const { input } = setup({ required: 500 })
    expect(input).toHaveValue("500")
    expect(screen.getByText(/dust-only items: apply at least 500 dust/)).toBeInTheDocument()
    await apply(input, "499")
    expect(await screen.findByRole("alert")).toHaveTextContent("cost 500 dust: apply at least that")
    expect(fetchMock).not.toHaveBeenCalled()
  })

  it.each([
    [{ status: 400, body: { type: "insufficient_funds", message: "Not enough available" } }, "You do not have that much dust available."],
    [{ status: 400, body: { type: "invalid_data", message: "The cart costs less than that: apply at most 511 dust" } }, "The cart costs less than that. Apply at most 511 dust."],
    [DUST_DOWN, "Dust is not answering right now"],
    ["network-error" as const, "The store is not answering"],
  ])("shows the store's refusal %j readably", async (answer, message) => {
    mockFetch({ "POST /store/dust/apply-to-cart": answer })
    const { onChange, input } = setup()
    await apply(input, "600")
    expect(await screen.findByRole("alert")).toHaveTextContent(message)
    expect(onChange).not.toHaveBeenCalled()
    expect(screen.getByRole("button", { name: "Apply dust" })).toBeEnabled()
  })

  it("shows what is applied, counts it as spendable, and removes it", async () => {
    const { calls } = mockFetch({
      "DELETE /store/dust/apply-to-cart": { status: 200, body: { cart: { id: "cart_1" }, released: 500 } },
    })
    const { onChange } = setup({ cart: WITH_DUST, available: 100 })
    expect(screen.getByTestId("dust-applied")).toHaveTextContent("500 dust applied ($5.00 off)")
    expect(screen.getByText(/of 600 dust available/)).toBeInTheDocument()
    await userEvent.click(screen.getByRole("button", { name: "Remove" }))
    expect(calls[0].method).toBe("DELETE")
    expect(calls[0].url.searchParams.get("kind")).toBe("dust")
    expect(onChange).toHaveBeenCalledTimes(1)
  })
})
