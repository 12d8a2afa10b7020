import { render, screen } from "@testing-library/react"
import { describe, expect, it } from "vitest"
import { DustPrice, useDustProducts } from "../src/dust/DustPrice"
import type { DustClient } from "../src/dust/client"
import { DUST_DOWN, makeDust, mockFetch } from "./support"

function Prices({ dust, ids }: { dust: DustClient; ids: string[] }) {
  const { settings, error } = useDustProducts(dust, ids)
  return (
    <ul>
      {ids.map((id) => (
        <li key={id} data-testid={id}>
          <DustPrice settings={settings?.get(id)} amount={25.99} currency="usd" error={error} />
        </li>
      ))}
    </ul>
  )
}

describe("DustPrice", () => {
  it("prices a dust-only product in dust and another in money", () => {
    render(
      <>
        <DustPrice settings={{ id: "p1", dust_only: true, dust_price: 1500 }} amount={5} currency="usd" />
        <DustPrice settings={{ id: "p2", dust_only: false, dust_price: null }} amount={25.99} currency="usd" />
        <DustPrice settings={undefined} amount={2999} currency="jpy" />
      </>
    )
    expect(screen.getByTestId("dust-price")).toHaveTextContent("1,500 dust dust only")
    expect(screen.getAllByTestId("money-price").map((e) => e.textContent)).toEqual(["$25.99", "¥2,999"])
  })

  it("does not call a product dust-only without a positive price", () => {
    render(<DustPrice settings={{ id: "p1", dust_only: true, dust_price: null }} amount={5} currency="usd" />)
    expect(screen.getByTestId("money-price")).toHaveTextContent("$5.00")
  })

  it("loads every product's settings in one request", async () => {
    const { calls } = mockFetch({
      "GET /store/dust/products": { status: 200, body: { products: [{ id: "p1", dust_only: true, dust_price: 500 }] } },
    })
    render(<Prices dust={makeDust()} ids={["p1", "p2"]} />)
    expect(await screen.findByTestId("dust-price")).toHaveTextContent("500 dust")
    expect(screen.getByTestId("p2")).toHaveTextContent("$25.99")
    expect(calls).toHaveLength(1)
  })

  it("shows no price rather than a wrong one when the settings cannot be read", async () => {
    mockFetch({ "GET /store/dust/products": DUST_DOWN })
    render(<Prices dust={makeDust()} ids={["p1"]} />)
    expect(await screen.findByRole("status")).toHaveTextContent("Price unavailable: Dust is not answering right now")
    expect(screen.queryByTestId("money-price")).not.toBeInTheDocument()
  })
})
