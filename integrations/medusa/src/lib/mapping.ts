/**
 * Money and mapping: the one place where Medusa's entities become Dust's envelopes.
 *
 * Medusa keeps amounts as decimal major units (`10.5` is $10.50) and computes totals at
 * full precision (8.875 % tax on 25.99 gives 2.3066125). Dust takes integers in minor
 * units. Every conversion here is decimal (bignumber.js), by the currency's
 * `decimal_digits`; never a binary float. An amount Medusa *computed* is rounded half-up
 * to the minor unit once, the way Medusa's payment providers round before they charge;
 * the decimal it came from travels beside it in `raw`.
 *
 * Pure functions over plain objects (what `query.graph` returns), so they are tested
 * without a Medusa server.
 */
import BigNumberJs from "bignumber.js"

/** Decimal arithmetic for money: half-up rounding, never exponent notation. */
export const Decimal = BigNumberJs.clone({
  DECIMAL_PLACES: 40,
  ROUNDING_MODE: BigNumberJs.ROUND_HALF_UP,
  EXPONENTIAL_AT: 1e9,
})
export type Decimal = InstanceType<typeof Decimal>

/** Credit-line references the plugin writes on carts; any other credit line is not Dust's. */
export const DUST_CREDIT_LINE = "dust"
export const DUST_STORE_CREDIT_LINE = "dust-store-credit"

export class MappingError extends Error {
  constructor(message: string) {
    super(message)
    this.name = "MappingError"
  }
}

// -- money ---------------------------------------------------------------------------

/**
 * A decimal from anything Medusa hands out for an amount: a number (HTTP JSON), a decimal
 * string, a raw value `{value, precision}` (`raw_total`), or Medusa's BigNumber object
 * (which has `raw` and `toJSON`).
 */
export function decimal(value: unknown, what = "amount"): Decimal {
  if (value instanceof Decimal) {
    return value
  }
  if (typeof value === "number") {
    if (!Number.isFinite(value)) {
      throw new MappingError(`${what} is not a finite number: ${value}`)
    }
    // String(n) is the shortest text that reads back as the same double: 10.5 -> "10.5".
    return checked(new Decimal(String(value)), what, value)
  }
  if (typeof value === "bigint") {
    return new Decimal(value.toString())
  }
  if (typeof value === "string") {
    return checked(new Decimal(value.trim()), what, value)
  }
  if (value !== null && typeof value === "object") {
    const object = value as Record<string, unknown>
    if ("value" in object && object.value !== undefined && object.value !== null) {
      return decimal(object.value, what)
    }
    const raw = object.raw as Record<string, unknown> | undefined
    if (raw && raw.value !== undefined && raw.value !== null) {
      return decimal(raw.value, what)
    }
    if (typeof object.toJSON === "function") {
      return decimal((object.toJSON as () => unknown)(), what)
    }
  }
  throw new MappingError(`${what} is not an amount: ${JSON.stringify(value)}`)
}

function checked(result: Decimal, what: string, source: unknown): Decimal {
  if (!result.isFinite()) {
    throw new MappingError(`${what} is not a decimal amount: ${JSON.stringify(source)}`)
  }
  return result
}

/** `decimal_digits` must be a small whole number (jpy 0, usd 2, kwd 3). */
export function checkDigits(digits: unknown, currency = "?"): number {
  if (typeof digits !== "number" || !Number.isInteger(digits) || digits < 0 || digits > 8) {
    throw new MappingError(`currency ${currency} has no usable decimal_digits: ${digits}`)
  }
  return digits
}

/** Exact minor units of a major-unit decimal (unrounded: may have a fraction). */
export function minorUnits(amount: unknown, digits: number): Decimal {
  return decimal(amount).shiftedBy(checkDigits(digits))
}

/**
 * Integer minor units of a major-unit amount, rounded half-up once:
 * `toMinor("2.3066125", 2) === 231`, `toMinor(10.5, 2) === 1050`, `toMinor(1500, 0) === 1500`.
 */
export function toMinor(amount: unknown, digits: number, what = "amount"): number {
  const rounded = minorUnits(amount, digits).integerValue(Decimal.ROUND_HALF_UP)
  const result = rounded.toNumber()
  if (!Number.isSafeInteger(result)) {
    throw new MappingError(`${what} is too large for an integer amount: ${rounded.toFixed()}`)
  }
  return result === 0 ? 0 : result // no -0
}

/** Major units (decimal string) of an integer amount in minor units: exact. */
export function fromMinor(minor: number | string | Decimal, digits: number): string {
  return decimal(minor).shiftedBy(-checkDigits(digits)).toFixed()
}

/** A decimal as plain text, without trailing zeros (`"2.3066125"`, `"28.2966125"`). */
export function rawText(value: unknown): string {
  return decimal(value).toFixed()
}

/**
 * The money one spends with `dust` dust at `redeemValue` minor units per dust, in whole
 * minor units, rounded down: the store never gives more than Dust will charge for.
 */
export function dustMoneyMinor(dust: number, redeemValue: string): number {
  if (!Number.isSafeInteger(dust) || dust < 0) {
    throw new MappingError(`dust amount must be a whole number >= 0: ${dust}`)
  }
  const value = new Decimal(dust).times(decimal(redeemValue, "redeem value"))
  return value.integerValue(Decimal.ROUND_DOWN).toNumber()
}

/** Fewest dust whose money value covers `minor` minor units (rounded up). */
export function dustToCover(minor: number, redeemValue: string): number {
  const redeem = decimal(redeemValue, "redeem value")
  if (!redeem.isGreaterThan(0)) {
    throw new MappingError(`redeem value must be > 0: ${redeemValue}`)
  }
  return new Decimal(minor).dividedBy(redeem).integerValue(Decimal.ROUND_UP).toNumber()
}

// -- small helpers -------------------------------------------------------------------

type Row = Record<string, any>

export function isoTime(value: unknown, what = "time"): string {
  if (value instanceof Date || typeof value === "string" || typeof value === "number") {
    const date = new Date(value as string)
    if (!Number.isNaN(date.getTime())) {
      return date.toISOString()
    }
  }
  throw new MappingError(`${what} is not a time: ${JSON.stringify(value)}`)
}

/** `customer_id` for Dust: null for a guest (`has_account: false`) or no customer. */
export function dustCustomerId(order: Row): string | null {
  const customer = order.customer as Row | null | undefined
  const id = (order.customer_id as string | null | undefined) ?? customer?.id ?? null
  if (!id) {
    return null
  }
  if (customer && customer.has_account === false) {
    return null
  }
  return id
}

function amountOf(row: Row, field: string): unknown {
  const raw = row[`raw_${field}`]
  return raw !== undefined && raw !== null ? raw : row[field]
}

function required(row: Row, field: string, what: string): unknown {
  const value = amountOf(row, field)
  if (value === undefined || value === null) {
    throw new MappingError(`${what} has no ${field}`)
  }
  return value
}

function optionalAmount(row: Row, field: string): Decimal {
  const value = amountOf(row, field)
  return value === undefined || value === null ? new Decimal(0) : decimal(value, field)
}

export interface Envelope {
  id: string
  name: string
  occurred_at: string
  data: Record<string, unknown>
}

// -- products and customers ----------------------------------------------------------

export interface DustProductSettings {
  dust_only: boolean
  dust_price: number | null
}

/**
 * A product's dust settings from its Medusa metadata (`dust_only`, `dust_price`). Medusa's
 * admin stores metadata values as text, so `"true"` and `"1500"` are read too; anything
 * else is not a setting (`dust_only` false, `dust_price` null).
 */
export function dustSettings(metadata: unknown): DustProductSettings {
  const meta = (metadata && typeof metadata === "object" ? metadata : {}) as Row
  const only = meta.dust_only
  const dustOnly = only === true || only === "true" || only === 1 || only === "1"
  let price: number | null = null
  const rawPrice = meta.dust_price
  if (typeof rawPrice === "number" && Number.isSafeInteger(rawPrice) && rawPrice >= 0) {
    price = rawPrice
  } else if (typeof rawPrice === "string" && /^\d{1,15}$/.test(rawPrice.trim())) {
    price = Number(rawPrice.trim())
  }
  return { dust_only: dustOnly, dust_price: price }
}

export function productEnvelope(
  name: "product.created" | "product.updated",
  product: Row
): Envelope {
  const settings = dustSettings(product.metadata)
  const metadata: Record<string, unknown> = { dust_only: settings.dust_only }
  if (settings.dust_price !== null) {
    metadata.dust_price = settings.dust_price
  }
  const when = name === "product.created" ? product.created_at : product.updated_at
  const occurredAt = isoTime(when, `product ${product.id} ${name === "product.created" ? "created_at" : "updated_at"}`)
  const id = name === "product.created" ? `${name}:${product.id}` : `${name}:${product.id}:${occurredAt}`
  return { id, name, occurred_at: occurredAt, data: { id: product.id, metadata } }
}

/** A customer event, or null for a guest customer (Dust knows guests by orders only). */
export function customerEnvelope(
  name: "customer.created" | "customer.updated",
  customer: Row
): Envelope | null {
  if (customer.has_account === false) {
    return null
  }
  const when = name === "customer.created" ? customer.created_at : customer.updated_at
  const occurredAt = isoTime(when, `customer ${customer.id} time`)
  const id = name === "customer.created" ? `${name}:${customer.id}` : `${name}:${customer.id}:${occurredAt}`
  const data: Record<string, unknown> = { id: customer.id }
  if (typeof customer.email === "string" && customer.email) {
    data.email = customer.email
  }
  if (Array.isArray(customer.groups)) {
    data.group_ids = customer.groups.map((g: Row) => g.id).filter(Boolean).sort()
  }
  return { id, name, occurred_at: occurredAt, data }
}

// -- orders --------------------------------------------------------------------------

/**
 * Credit lines the order was placed with (copied from the cart, order version 1). Medusa's
 * refund workflow later adds credit lines of its own to the order (version 2+, referenced
 * by the refund reason): they are refunds, not payments.
 */
export function placementCreditLines(order: Row): Row[] {
  return ((order.credit_lines ?? []) as Row[]).filter(
    (line) => line && (line.version === undefined || line.version === null || Number(line.version) <= 1)
  )
}

function dustOfCreditLine(line: Row): number {
  const meta = (line.metadata ?? {}) as Row
  const dust = meta.dust_amount
  if (typeof dust === "number" && Number.isSafeInteger(dust) && dust >= 0) {
    return dust
  }
  if (typeof dust === "string" && /^\d{1,15}$/.test(dust)) {
    return Number(dust)
  }
  throw new MappingError(`dust credit line ${line.id ?? "?"} has no whole dust_amount in its metadata`)
}

export interface OrderPlacedPayload {
  id: string
  customer_id: string | null
  cart_id?: string
  currency_code: string
  total: number
  shipping_total: number
  tax_total: number
  dust_total: number
  store_credit_total: number
  gift_card_total: number
  items: { id: string; product_id: string | null; quantity: number; total: number; is_giftcard: boolean }[]
  raw: Record<string, unknown>
}

/**
 * `order.placed` for Dust, from an order loaded with `ORDER_FIELDS`.
 *
 * - `total`: goods + shipping + tax before any credit line (Medusa's `total` is after them).
 * - `shipping_total`: shipping net of its tax (Medusa's includes it; `tax_total` has it).
 * - items' `total`: the item's money net of tax and discounts (`total - tax_total`, which
 *   for a tax-inclusive price is its subtotal net of the included tax), rounded once.
 * - `dust_total` in dust (from the Dust credit lines' metadata), `store_credit_total` and
 *   `gift_card_total` (every credit line that is not Dust's) in minor units.
 */
export function orderPlacedPayload(order: Row, digits: number): OrderPlacedPayload {
  const what = `order ${order.id}`
  const currency = String(order.currency_code ?? "").toLowerCase()
  if (!currency) {
    throw new MappingError(`${what} has no currency_code`)
  }
  checkDigits(digits, currency)
  const medusaTotal = decimal(required(order, "total", what), "total")
  const creditLineTotal = order.raw_credit_line_total !== undefined || order.credit_line_total !== undefined
    ? optionalAmount(order, "credit_line_total")
    : ((order.credit_lines ?? []) as Row[]).reduce<Decimal>(
        (sum, line) => sum.plus(decimal(amountOf(line, "amount"), "credit line amount")),
        new Decimal(0)
      )
  const totalBefore = medusaTotal.plus(creditLineTotal)
  // Medusa's shipping_total includes the shipping's tax, which tax_total counts too: Dust
  // takes total - shipping_total - tax_total as what the goods cost, so shipping goes net.
  const medusaShipping = optionalAmount(order, "shipping_total")
  const shippingTax = optionalAmount(order, "shipping_tax_total")
  const shipping = medusaShipping.minus(shippingTax)
  const tax = optionalAmount(order, "tax_total")

  let dustTotal = 0
  let storeCredit = new Decimal(0)
  let giftCard = new Decimal(0)
  for (const line of placementCreditLines(order)) {
    const amount = decimal(amountOf(line, "amount"), "credit line amount")
    if (line.reference === DUST_CREDIT_LINE) {
      dustTotal += dustOfCreditLine(line)
    } else if (line.reference === DUST_STORE_CREDIT_LINE) {
      storeCredit = storeCredit.plus(amount)
    } else {
      giftCard = giftCard.plus(amount)
    }
  }

  const rawItems: Record<string, string> = {}
  const items = ((order.items ?? []) as Row[]).map((item) => {
    const net = decimal(required(item, "total", `item ${item.id}`), "item total").minus(
      optionalAmount(item, "tax_total")
    )
    rawItems[item.id] = net.toFixed()
    const quantity = decimal(amountOf(item, "quantity") ?? 0, "quantity")
    return {
      id: String(item.id),
      product_id: item.product_id ?? null,
      quantity: quantity.integerValue(Decimal.ROUND_HALF_UP).toNumber(),
      total: Math.max(0, toMinor(net, digits, `item ${item.id} total`)),
      is_giftcard: item.is_giftcard === true,
    }
  })

  const payload: OrderPlacedPayload = {
    id: String(order.id),
    customer_id: dustCustomerId(order),
    currency_code: currency,
    total: toMinor(totalBefore, digits, "total"),
    shipping_total: toMinor(shipping, digits, "shipping_total"),
    tax_total: toMinor(tax, digits, "tax_total"),
    dust_total: dustTotal,
    store_credit_total: toMinor(storeCredit, digits, "store_credit_total"),
    gift_card_total: toMinor(giftCard, digits, "gift_card_total"),
    items,
    raw: {
      total: totalBefore.toFixed(),
      order_total: medusaTotal.toFixed(),
      credit_line_total: creditLineTotal.toFixed(),
      shipping_total: shipping.toFixed(),
      medusa_shipping_total: medusaShipping.toFixed(),
      shipping_tax_total: shippingTax.toFixed(),
      tax_total: tax.toFixed(),
      store_credit_total: storeCredit.toFixed(),
      gift_card_total: giftCard.toFixed(),
      items: rawItems,
    },
  }
  const cartId = order.cart?.id ?? cartIdOfCreditLines(order)
  if (cartId) {
    payload.cart_id = String(cartId)
  }
  return payload
}

function cartIdOfCreditLines(order: Row): string | undefined {
  for (const line of placementCreditLines(order)) {
    const cartId = (line.metadata as Row | undefined)?.cart_id
    if (typeof cartId === "string" && cartId) {
      return cartId
    }
  }
  return undefined
}

export function orderPlacedEnvelope(order: Row, digits: number): Envelope {
  return {
    id: `order.placed:${order.id}`,
    name: "order.placed",
    occurred_at: isoTime(order.created_at, `order ${order.id} created_at`),
    data: orderPlacedPayload(order, digits) as unknown as Record<string, unknown>,
  }
}

export function orderCanceledEnvelope(order: Row): Envelope {
  const when = order.canceled_at ?? order.updated_at
  return {
    id: `order.canceled:${order.id}`,
    name: "order.canceled",
    occurred_at: isoTime(when, `order ${order.id} canceled_at`),
    data: { id: String(order.id) },
  }
}

// -- refunds and returns -------------------------------------------------------------

/** Refunds created this close before an order's `canceled_at` are taken as the cancel's own. */
export const CANCEL_REFUND_WINDOW_MS = 60_000

/**
 * Whether a refund is the one Medusa's cancel made: canceling an order with a captured
 * payment refunds what is left of it (no reason, no `payment.refunded` event) and then sets
 * `canceled_at`. `order.canceled` already gives Dust everything back, so forwarding that
 * refund too would pay the customer twice.
 */
export function refundOfCancel(refund: Row, order: Row): boolean {
  if (!order.canceled_at || refund.refund_reason_id) {
    return false
  }
  const created = new Date(refund.created_at).getTime()
  const canceled = new Date(order.canceled_at).getTime()
  return created >= canceled - CANCEL_REFUND_WINDOW_MS
}

/**
 * One Medusa refund as `refund.created`, or null when it rounds to nothing. `order` is
 * the refund's order (with `customer.has_account`), found through its payment.
 */
export function refundEnvelope(
  refund: Row,
  order: Row,
  currencyCode: string,
  digits: number,
  toStoreCredit: boolean
): Envelope | null {
  const amount = toMinor(required(refund, "amount", `refund ${refund.id}`), digits, "refund amount")
  if (amount <= 0) {
    return null
  }
  return {
    id: `refund.created:${refund.id}`,
    name: "refund.created",
    occurred_at: isoTime(refund.created_at, `refund ${refund.id} created_at`),
    data: {
      id: String(refund.id),
      order_id: String(order.id),
      customer_id: dustCustomerId(order),
      amount,
      currency_code: currencyCode.toLowerCase(),
      to_store_credit: toStoreCredit,
      raw: { amount: rawText(required(refund, "amount", `refund ${refund.id}`)) },
    },
  }
}

/**
 * Dust given back for a received return: each returned (received or damaged) unit of a
 * dust-only product gives back its `dust_price`. Dust caps it at what the order charged
 * in dust, less what earlier refunds gave back.
 */
export function returnedDust(
  returnRow: Row,
  orderItems: Row[],
  settingsByProduct: Map<string, DustProductSettings>
): number {
  const productOfItem = new Map<string, string | null>()
  for (const item of orderItems) {
    productOfItem.set(String(item.id), item.product_id ?? null)
  }
  let dust = 0
  for (const returned of (returnRow.items ?? []) as Row[]) {
    const productId = productOfItem.get(String(returned.item_id))
    const settings = productId ? settingsByProduct.get(productId) : undefined
    if (!settings || !settings.dust_only || !settings.dust_price) {
      continue
    }
    const units = decimal(amountOf(returned, "received_quantity") ?? 0, "received_quantity").plus(
      decimal(amountOf(returned, "damaged_quantity") ?? 0, "damaged_quantity")
    )
    dust += units.integerValue(Decimal.ROUND_DOWN).toNumber() * settings.dust_price
  }
  return dust
}

/** A received return that gives dust back, as `refund.created` with `dust_amount`; null when none. */
export function returnEnvelope(
  returnRow: Row,
  order: Row,
  settingsByProduct: Map<string, DustProductSettings>
): Envelope | null {
  const dust = returnedDust(returnRow, (order.items ?? []) as Row[], settingsByProduct)
  if (dust <= 0) {
    return null
  }
  return {
    id: `refund.created:return:${returnRow.id}`,
    name: "refund.created",
    occurred_at: isoTime(returnRow.received_at ?? returnRow.created_at, `return ${returnRow.id} received_at`),
    data: {
      id: `return:${returnRow.id}`,
      order_id: String(order.id),
      customer_id: dustCustomerId(order),
      amount: 0,
      dust_amount: dust,
      currency_code: String(order.currency_code).toLowerCase(),
      to_store_credit: false,
    },
  }
}
