// @vitest-environment jsdom
import { FetchError } from "@medusajs/js-sdk"
import { screen } from "@testing-library/react"
import userEvent from "@testing-library/user-event"
import { beforeEach, describe, expect, it, vi } from "vitest"
import { renderWithQuery } from "./render"

const update = vi.hoisted(() => vi.fn())
vi.mock("../../src/admin/lib/sdk", () => ({ sdk: { admin: { product: { update } }, client: { fetch: vi.fn() } } }))

import { ProductDustWidget } from "../../src/admin/widgets/product-dust"
import { dustSettings } from "../../src/lib/mapping"

const product = (metadata: Record<string, unknown> | null) => ({ id: "prod_1", title: "Sticker", metadata }) as any

beforeEach(() => {
  update.mockReset()
  update.mockImplementation(async (id: string, body: any) => ({ product: { id, metadata: body.metadata } }))
})

async function save(price: string | null, toggle = false) {
  if (toggle) await userEvent.click(screen.getByRole("switch"))
  const input = screen.getByLabelText("Price in dust")
  await userEvent.clear(input)
  if (price) await userEvent.type(input, price)
  await userEvent.click(screen.getByRole("button", { name: "Save dust settings" }))
}

describe("the product widget", () => {
  it("saves dust-only and a price into the metadata the plugin's mapping reads", async () => {
    renderWithQuery(<ProductDustWidget data={product({ colour: "red" })} />)
    expect(screen.getByText("Sold for money")).toBeTruthy()
    await save("1500", true)
    expect(await screen.findByTestId("dust-product-saved")).toBeTruthy()
    expect(update).toHaveBeenCalledWith("prod_1", { metadata: { colour: "red", dust_only: true, dust_price: 1500 } })
    // What product.updated will carry to Dust:
    expect(dustSettings(update.mock.calls[0][1].metadata)).toEqual({ dust_only: true, dust_price: 1500 })
  })

  it("shows the saved settings, including text values from Medusa's metadata editor", () => {
    renderWithQuery(<ProductDustWidget data={product({ dust_only: "true", dust_price: "900" })} />)
    expect(screen.getByText("Dust-only, 900 dust")).toBeTruthy()
    expect((screen.getByLabelText("Price in dust") as HTMLInputElement).value).toBe("900")
    expect(screen.getByRole("switch").getAttribute("aria-checked")).toBe("true")
  })

  it("turns dust-only off and removes the price", async () => {
    renderWithQuery(<ProductDustWidget data={product({ dust_only: true, dust_price: 900 })} />)
    await save(null, true)
    await screen.findByTestId("dust-product-saved")
    expect(update).toHaveBeenCalledWith("prod_1", { metadata: { dust_only: false, dust_price: "" } })
  })

  it.each([
    ["", "A dust-only product needs a dust price: a whole number of dust, at least 1."],
    ["0", "The dust price must be at least 1."],
    ["-20", "The dust price must be positive: -20 is negative."],
    ["12.5", "The dust price must be a whole number: 12.5 has a fraction."],
    ["lots", "The dust price must be a whole number, like 250."],
  ])("refuses price %j for a dust-only product", async (price, message) => {
    renderWithQuery(<ProductDustWidget data={product(null)} />)
    await save(price, true)
    expect(screen.getByTestId("dust-form-error").textContent).toBe(message)
    expect(update).not.toHaveBeenCalled()
  })

  it("shows Medusa's refusal readably", async () => {
    update.mockRejectedValue(new FetchError("Product with id: prod_1 was not found", "Not Found", 404))
    renderWithQuery(<ProductDustWidget data={product(null)} />)
    await save("10", true)
    expect((await screen.findByTestId("dust-product-error")).textContent).toBe(
      "Medusa refused: Product with id: prod_1 was not found"
    )
  })
})
