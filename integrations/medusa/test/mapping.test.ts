import { decorateCartTotals } from "@medusajs/framework/utils"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  Decimal,
  DUST_CREDIT_LINE,
  DUST_STORE_CREDIT_LINE,
  MappingError,
  customerEnvelope,
  dustSettings,
  orderCanceledEnvelope,
  orderPlacedEnvelope,
  orderPlacedPayload,
  productEnvelope,
  refundEnvelope,
  refundOfCancel,
  returnEnvelope,
} from "../src/lib/mapping"

type Row = Record<string, any>

interface ItemSpec {
  unit_price: number | string
  quantity: number
  rate: number
  inclusive?: boolean
  is_giftcard?: boolean
  product_id?: string
}

/**
 * An order as Medusa's query returns it: totals computed by Medusa's own
 * `decorateCartTotals` (the function its order and cart modules use), as BigNumber objects.
 */
function medusaOrder(spec: {
  currency?: string
  items: ItemSpec[]
  shipping?: { amount: number | string; rate: number }[]
  credit_lines?: Row[]
  customer?: Row | null
}): Row {
  const currency = spec.currency ?? "usd"
  const cart: Row = {
    currency_code: currency,
    items: spec.items.map((item, i) => ({
      id: `item_${i + 1}`,
      product_id: item.product_id ?? `prod_${i + 1}`,
      unit_price: item.unit_price,
      quantity: item.quantity,
      is_tax_inclusive: item.inclusive ?? false,
      is_giftcard: item.is_giftcard ?? false,
      tax_lines: item.rate ? [{ rate: item.rate }] : [],
      adjustments: [],
    })),
    shipping_methods: (spec.shipping ?? []).map((s, i) => ({
      id: `sm_${i + 1}`,
      amount: s.amount,
      is_tax_inclusive: false,
      tax_lines: s.rate ? [{ rate: s.rate }] : [],
      adjustments: [],
    })),
    credit_lines: (spec.credit_lines ?? []).map((line, i) => ({ id: `cl_${i + 1}`, version: 1, ...line })),
  }
  const totals = decorateCartTotals(cart) as Row
  return {
    id: "order_1",
    customer_id: spec.customer === null ? null : (spec.customer?.id ?? "cus_1"),
    customer: spec.customer === null ? null : { id: "cus_1", has_account: true, ...spec.customer },
    cart: { id: "cart_1" },
    created_at: "2026-11-20T10:00:00.000Z",
    ...totals,
  }
}

describe("order.placed", () => {
  it("8.875 % tax: total 28.2966125 -> 2830, tax 2.3066125 -> 231, the item earns on 25.99 net", () => {
    const order = medusaOrder({ items: [{ unit_price: 25.99, quantity: 1, rate: 8.875 }] })
    const data = orderPlacedPayload(order, 2)
    expect(data.total).toBe(2830)
    expect(data.tax_total).toBe(231)
    expect(data.shipping_total).toBe(0)
    expect(data.items).toEqual([
      { id: "item_1", product_id: "prod_1", quantity: 1, total: 2599, is_giftcard: false },
    ])
    expect(data.raw).toMatchObject({ total: "28.2966125", tax_total: "2.3066125", items: { item_1: "25.99" } })
  })

  it("items net of tax, not Medusa's item total (which includes tax), with taxed shipping", () => {
    // Two taxed items and taxed shipping: sending items[].total would earn on tax.
    const order = medusaOrder({
      items: [
        { unit_price: 100, quantity: 2, rate: 10 },
        { unit_price: 10, quantity: 1, rate: 10 },
      ],
      shipping: [{ amount: 8, rate: 10 }],
    })
    const data = orderPlacedPayload(order, 2)
    expect(data.items.map((i) => i.total)).toEqual([20000, 1000])
    expect(Number(new Decimal((order.items[0] as Row).total.raw.value).toFixed())).toBe(220) // Medusa's, with tax
    // Medusa's shipping_total (8.80) includes its tax; tax_total counts that tax already.
    expect(data.shipping_total).toBe(800)
    expect(data.total - data.shipping_total - data.tax_total).toBe(21000)
    expect(data.tax_total).toBe(2180)
    expect(data.total).toBe(23980)
  })

  it("tax-inclusive prices: the item's net excludes the included tax", () => {
    const order = medusaOrder({ items: [{ unit_price: 10.89, quantity: 1, rate: 8.875, inclusive: true }] })
    const data = orderPlacedPayload(order, 2)
    // 10.89 / 1.08875 = 10.00229...
    expect(data.items[0].total).toBe(1000)
    expect(data.total).toBe(1089)
    expect(data.tax_total).toBe(89)
  })

  it("jpy: whole yen", () => {
    const order = medusaOrder({ currency: "jpy", items: [{ unit_price: 1500, quantity: 3, rate: 10 }] })
    const data = orderPlacedPayload(order, 0)
    expect(data).toMatchObject({ currency_code: "jpy", total: 4950, tax_total: 450 })
    expect(data.items[0].total).toBe(4500)
  })

  it("kwd: three digits", () => {
    const order = medusaOrder({ currency: "kwd", items: [{ unit_price: "12.345", quantity: 1, rate: 5 }] })
    const data = orderPlacedPayload(order, 3)
    // tax 0.61725 -> 617 fils
    expect(data).toMatchObject({ currency_code: "kwd", total: 12962, tax_total: 617 })
    expect(data.items[0].total).toBe(12345)
  })

  it("credit lines: Medusa's total is after them, Dust's before; dust, store credit and gift cards apart", () => {
    const order = medusaOrder({
      items: [{ unit_price: 50, quantity: 1, rate: 0 }],
      credit_lines: [
        { reference: DUST_CREDIT_LINE, amount: 5, metadata: { dust_amount: 500, cart_id: "cart_1" } },
        { reference: DUST_STORE_CREDIT_LINE, amount: 3, metadata: { store_credit_amount: 300 } },
        { reference: "gift-card", amount: 2 },
      ],
    })
    expect(Number(order.total.raw.value)).toBe(40)
    const data = orderPlacedPayload(order, 2)
    expect(data).toMatchObject({ total: 5000, dust_total: 500, store_credit_total: 300, gift_card_total: 200 })
  })

  it("a refund's credit line (order version 2+) is neither a payment nor a change of total", () => {
    const order = medusaOrder({ items: [{ unit_price: 50, quantity: 1, rate: 0 }] })
    const refunded = medusaOrder({
      items: [{ unit_price: 50, quantity: 1, rate: 0 }],
      credit_lines: [{ reference: "Customer complaint", reference_id: "complaint", amount: 10, version: 2 }],
    })
    expect(Number(refunded.total.raw.value)).toBe(40)
    const before = orderPlacedPayload(order, 2)
    const after = orderPlacedPayload(refunded, 2)
    expect(after.total).toBe(before.total)
    expect(after.gift_card_total).toBe(0)
  })

  it("a dust credit line without a whole dust_amount is refused, not guessed", () => {
    const order = medusaOrder({
      items: [{ unit_price: 50, quantity: 1, rate: 0 }],
      credit_lines: [{ reference: DUST_CREDIT_LINE, amount: 5, metadata: {} }],
    })
    expect(() => orderPlacedPayload(order, 2)).toThrow(MappingError)
  })

  it("guests (has_account false) and orders without a customer send customer_id null", () => {
    const guest = medusaOrder({ items: [{ unit_price: 5, quantity: 1, rate: 0 }], customer: { id: "cus_g", has_account: false } })
    expect(orderPlacedPayload(guest, 2).customer_id).toBeNull()
    const none = medusaOrder({ items: [{ unit_price: 5, quantity: 1, rate: 0 }], customer: null })
    expect(orderPlacedPayload(none, 2).customer_id).toBeNull()
    const member = medusaOrder({ items: [{ unit_price: 5, quantity: 1, rate: 0 }] })
    expect(orderPlacedPayload(member, 2).customer_id).toBe("cus_1")
  })

  it("gift-card items are flagged", () => {
    const order = medusaOrder({ items: [{ unit_price: 25, quantity: 1, rate: 0, is_giftcard: true }] })
    expect(orderPlacedPayload(order, 2).items[0].is_giftcard).toBe(true)
  })

  it("the envelope: deterministic id, occurred_at from created_at, cart id", () => {
    const order = medusaOrder({ items: [{ unit_price: 5, quantity: 1, rate: 0 }] })
    const envelope = orderPlacedEnvelope(order, 2)
    expect(envelope).toMatchObject({
      id: "order.placed:order_1",
      name: "order.placed",
      occurred_at: "2026-11-20T10:00:00.000Z",
      data: { id: "order_1", cart_id: "cart_1" },
    })
    expect(orderPlacedEnvelope(order, 2)).toEqual(envelope)
  })

  it("property: items net of tax, rounded once; totals within rounding of Medusa's decimals", () => {
    const item = fc.record({
      cents: fc.integer({ min: 1, max: 100_000 }),
      quantity: fc.integer({ min: 1, max: 5 }),
      rate: fc.constantFrom(0, 5, 8.875, 10, 20, 7.25),
      inclusive: fc.boolean(),
    })
    fc.assert(
      fc.property(fc.array(item, { minLength: 1, maxLength: 6 }), fc.integer({ min: 0, max: 5000 }), (items, shipCents) => {
        const order = medusaOrder({
          items: items.map((i) => ({ unit_price: i.cents / 100, quantity: i.quantity, rate: i.rate, inclusive: i.inclusive })),
          shipping: shipCents ? [{ amount: shipCents / 100, rate: 10 }] : [],
        })
        const data = orderPlacedPayload(order, 2)
        items.forEach((spec, index) => {
          const gross = new Decimal(spec.cents).times(spec.quantity)
          const net = spec.inclusive ? gross.dividedBy(new Decimal(spec.rate).dividedBy(100).plus(1)) : gross
          expect(data.items[index].total).toBe(net.integerValue(Decimal.ROUND_HALF_UP).toNumber())
        })
        // Medusa's exact total, rounded once.
        expect(data.total).toBe(new Decimal(order.total.raw.value).shiftedBy(2).integerValue(Decimal.ROUND_HALF_UP).toNumber())
        // Goods net of tax never exceed the money the goods cost, beyond rounding.
        const goods = data.total - data.shipping_total - data.tax_total
        const itemsSum = data.items.reduce((s, i) => s + i.total, 0)
        expect(Math.abs(goods - itemsSum)).toBeLessThanOrEqual(items.length + 3)
      }),
      { numRuns: 200 }
    )
  })
})

describe("refunds, returns, cancels", () => {
  const order = { id: "order_1", customer_id: "cus_1", customer: { id: "cus_1", has_account: true }, currency_code: "usd" }

  it("a refund of $10.50 in usd is 1050, one envelope per Medusa refund", () => {
    const envelope = refundEnvelope({ id: "ref_1", amount: 10.5, created_at: "2026-11-21T09:00:00Z" }, order, "USD", 2, true)
    expect(envelope).toEqual({
      id: "refund.created:ref_1",
      name: "refund.created",
      occurred_at: "2026-11-21T09:00:00.000Z",
      data: {
        id: "ref_1",
        order_id: "order_1",
        customer_id: "cus_1",
        amount: 1050,
        currency_code: "usd",
        to_store_credit: true,
        raw: { amount: "10.5" },
      },
    })
  })

  it("the refund Medusa's cancel makes is not a refund for Dust (order.canceled gives everything back)", () => {
    const canceled = { ...order, canceled_at: "2026-11-21T10:00:05Z" }
    expect(refundOfCancel({ id: "r", created_at: "2026-11-21T10:00:04Z" }, canceled)).toBe(true)
    // an admin refund with a reason, or one well before the cancel, is forwarded
    expect(refundOfCancel({ id: "r", created_at: "2026-11-21T10:00:04Z", refund_reason_id: "rr_1" }, canceled)).toBe(false)
    expect(refundOfCancel({ id: "r", created_at: "2026-11-21T09:00:00Z" }, canceled)).toBe(false)
    expect(refundOfCancel({ id: "r", created_at: "2026-11-21T10:00:04Z" }, order)).toBe(false)
  })

  it("a guest's refund goes out with customer_id null", () => {
    const guest = { ...order, customer: { id: "cus_1", has_account: false } }
    const envelope = refundEnvelope({ id: "ref_2", raw_amount: { value: "3", precision: 20 }, created_at: "2026-11-21T09:00:00Z" }, guest, "usd", 2, true)
    expect(envelope?.data).toMatchObject({ customer_id: null, amount: 300 })
  })

  it("a returned dust-only item gives back its dust price per unit; other items nothing", () => {
    const withItems = { ...order, items: [{ id: "item_1", product_id: "prod_dust" }, { id: "item_2", product_id: "prod_cash" }] }
    const settings = new Map([
      ["prod_dust", { dust_only: true, dust_price: 1500 }],
      ["prod_cash", { dust_only: false, dust_price: null }],
    ])
    const returned = {
      id: "ret_1",
      received_at: "2026-11-22T10:00:00Z",
      items: [
        { item_id: "item_1", quantity: 2, received_quantity: 1, damaged_quantity: 1 },
        { item_id: "item_2", quantity: 1, received_quantity: 1, damaged_quantity: 0 },
      ],
    }
    expect(returnEnvelope(returned, withItems, settings)).toEqual({
      id: "refund.created:return:ret_1",
      name: "refund.created",
      occurred_at: "2026-11-22T10:00:00.000Z",
      data: {
        id: "return:ret_1",
        order_id: "order_1",
        customer_id: "cus_1",
        amount: 0,
        dust_amount: 3000,
        currency_code: "usd",
        to_store_credit: false,
      },
    })
    const cashOnly = { ...returned, items: [returned.items[1]] }
    expect(returnEnvelope(cashOnly, withItems, settings)).toBeNull()
  })

  it("order.canceled takes its time from canceled_at", () => {
    expect(orderCanceledEnvelope({ id: "order_1", canceled_at: new Date("2026-11-23T00:00:00Z") })).toEqual({
      id: "order.canceled:order_1",
      name: "order.canceled",
      occurred_at: "2026-11-23T00:00:00.000Z",
      data: { id: "order_1" },
    })
  })
})

describe("customers and products", () => {
  it("guest customers are not forwarded; others with a versioned id on update", () => {
    const base = { id: "cus_1", email: "a@example.com", created_at: "2026-11-01T00:00:00Z", updated_at: "2026-11-02T00:00:00Z" }
    expect(customerEnvelope("customer.created", { ...base, has_account: false })).toBeNull()
    expect(customerEnvelope("customer.created", { ...base, has_account: true, groups: [{ id: "g2" }, { id: "g1" }] })).toEqual({
      id: "customer.created:cus_1",
      name: "customer.created",
      occurred_at: "2026-11-01T00:00:00.000Z",
      data: { id: "cus_1", email: "a@example.com", group_ids: ["g1", "g2"] },
    })
    expect(customerEnvelope("customer.updated", { ...base, has_account: true })?.id).toBe(
      "customer.updated:cus_1:2026-11-02T00:00:00.000Z"
    )
  })

  it("product metadata as the admin stores it (text) is read as settings", () => {
    expect(dustSettings({ dust_only: "true", dust_price: "1500" })).toEqual({ dust_only: true, dust_price: 1500 })
    expect(dustSettings({ dust_only: true, dust_price: 20 })).toEqual({ dust_only: true, dust_price: 20 })
    expect(dustSettings({ dust_only: "no", dust_price: "1.5" })).toEqual({ dust_only: false, dust_price: null })
    expect(dustSettings(null)).toEqual({ dust_only: false, dust_price: null })
    const product = { id: "prod_1", metadata: { dust_only: "true", dust_price: "1500" }, created_at: "2026-11-01T00:00:00Z", updated_at: "2026-11-03T00:00:00Z" }
    expect(productEnvelope("product.updated", product)).toEqual({
      id: "product.updated:prod_1:2026-11-03T00:00:00.000Z",
      name: "product.updated",
      occurred_at: "2026-11-03T00:00:00.000Z",
      data: { id: "prod_1", metadata: { dust_only: true, dust_price: 1500 } },
    })
    expect(productEnvelope("product.created", product).id).toBe("product.created:prod_1")
  })
})
