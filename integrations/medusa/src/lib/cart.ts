/**
 * Paying with Dust at checkout: a hold in Dust (`dust.reserve`, the cart's reservation)
 * and a credit line on the Medusa cart worth what the hold pays, so Medusa charges the
 * rest and the order carries the credit line into `order.placed` (`dust_total`,
 * `store_credit_total`). One credit line per kind: `dust` (metadata `dust_amount`, the
 * dust held; amount = dust x redeem value, rounded down to the minor unit) and
 * `dust-store-credit` (metadata `store_credit_amount`, minor units).
 */
import { ContainerRegistrationKeys, MedusaError } from "@medusajs/framework/utils"
import type { MedusaContainer } from "@medusajs/framework/types"
import {
  createCartCreditLinesWorkflow,
  deleteCartCreditLinesWorkflow,
  refreshCartItemsWorkflow,
} from "@medusajs/medusa/core-flows"
import { currencyDigits } from "./forward"
import {
  DUST_CREDIT_LINE,
  DUST_STORE_CREDIT_LINE,
  Decimal,
  decimal,
  dustMoneyMinor,
  minorUnits,
} from "./mapping"
import { dustService } from "./service"

type Row = Record<string, any>
export type Kind = "dust" | "store_credit"

export const CART_FIELDS = [
  "id",
  "customer_id",
  "currency_code",
  "completed_at",
  "total",
  "credit_line_total",
  "credit_lines.id",
  "credit_lines.reference",
  "credit_lines.reference_id",
  "credit_lines.amount",
  "credit_lines.metadata",
]

export function referenceOf(kind: Kind): string {
  return kind === "dust" ? DUST_CREDIT_LINE : DUST_STORE_CREDIT_LINE
}

/** Thrown for a reply the route answers with `status` and `body`. */
export class CartRefusal extends Error {
  constructor(
    readonly status: number,
    readonly body: Record<string, unknown>
  ) {
    super(String(body.message ?? "refused"))
  }
}

export async function loadCart(container: MedusaContainer, cartId: string): Promise<Row> {
  const query = container.resolve(ContainerRegistrationKeys.QUERY)
  const { data } = await query.graph({ entity: "cart", fields: CART_FIELDS, filters: { id: cartId } })
  const cart = (data as Row[])[0]
  if (!cart) {
    throw new MedusaError(MedusaError.Types.NOT_FOUND, `Cart ${cartId} was not found`)
  }
  return cart
}

/** The signed-in customer's own, open cart: 403 for another customer's, 400 once completed. */
export async function ownCart(container: MedusaContainer, cartId: string, customerId: string): Promise<Row> {
  const cart = await loadCart(container, cartId)
  if (!cart.customer_id || cart.customer_id !== customerId) {
    throw new CartRefusal(403, { type: "not_allowed", message: "This cart belongs to another customer" })
  }
  if (cart.completed_at) {
    throw new MedusaError(MedusaError.Types.NOT_ALLOWED, `Cart ${cartId} is already completed`)
  }
  return cart
}

function linesOf(cart: Row, reference: string): Row[] {
  return ((cart.credit_lines ?? []) as Row[]).filter((line) => line.reference === reference)
}

async function replaceLines(container: MedusaContainer, cart: Row, reference: string, create: Row[]) {
  const old = linesOf(cart, reference).map((line) => line.id)
  if (old.length > 0) {
    await deleteCartCreditLinesWorkflow(container).run({ input: { id: old } })
  }
  if (create.length > 0) {
    await createCartCreditLinesWorkflow(container).run({ input: create as any })
  }
}

async function refresh(container: MedusaContainer, cartId: string) {
  // The payment collection follows the new total (as Medusa's own credit-line flows do).
  await refreshCartItemsWorkflow(container).run({ input: { cart_id: cartId } })
}

/**
 * Apply `amount` (dust, or store-credit minor units) to the customer's cart: reserve it in
 * Dust (replacing that kind's hold), then replace that kind's credit line. The money may
 * not pass what the cart still costs (rounded up to the minor unit).
 */
export async function applyToCart(container: MedusaContainer, cart: Row, customerId: string, amount: number, kind: Kind) {
  const dust = dustService(container)
  const currency = String(cart.currency_code).toLowerCase()
  const digits = await currencyDigits(container, currency)
  const reference = referenceOf(kind)
  const replaced = linesOf(cart, reference).reduce<Decimal>((sum, line) => sum.plus(decimal(line.amount)), new Decimal(0))
  // What the cart costs before this kind's credit line, in minor units (may have a fraction).
  const room = minorUnits(decimal(cart.total).plus(replaced), digits)
  if (!room.isGreaterThan(0)) {
    throw new CartRefusal(400, { type: "invalid_data", message: "The cart has nothing left to pay" })
  }
  let redeemValue: string | undefined
  let moneyMinor: number
  if (kind === "dust") {
    const balance = await dust.client.request<Row>("dust.balance", { customer_id: customerId })
    const values = (balance?.redeem_values ?? {}) as Record<string, string>
    redeemValue = values[currency] ?? values.default ?? "1"
    moneyMinor = dustMoneyMinor(amount, redeemValue)
  } else {
    moneyMinor = amount
  }
  const roomCeil = room.integerValue(Decimal.ROUND_UP).toNumber()
  if (moneyMinor > roomCeil) {
    const most = kind === "dust" ? new Decimal(roomCeil).dividedBy(redeemValue!).integerValue(Decimal.ROUND_UP).toNumber() : roomCeil
    throw new CartRefusal(400, {
      type: "invalid_data",
      message: `The cart costs less than that: apply at most ${most}${kind === "dust" ? " dust" : ""}`,
      max_amount: most,
    })
  }
  const kwargs: Row = { cart_id: cart.id, customer_id: customerId, amount, kind, currency_code: currency }
  const hold = await dust.client.request<Row>("dust.reserve", kwargs)
  if (hold?.status !== "reserved") {
    throw new CartRefusal(400, {
      type: hold?.reason === "insufficient_funds" ? "insufficient_funds" : "invalid_data",
      message: hold?.reason === "insufficient_funds" ? "Not enough available" : `Dust refused: ${hold?.reason}`,
      dust: hold,
    })
  }
  if (kind === "dust" && hold.redeem_value && hold.redeem_value !== redeemValue) {
    // The configuration changed between the two requests: price with what the hold says.
    redeemValue = String(hold.redeem_value)
    moneyMinor = Math.min(dustMoneyMinor(amount, redeemValue), roomCeil)
  }
  // The credit line never passes what the cart costs (a fraction of a minor unit at most).
  const money = Decimal.min(new Decimal(moneyMinor), room)
  const metadata: Row = { cart_id: cart.id, kind, hold_id: hold.hold_id ?? null }
  if (kind === "dust") {
    metadata.dust_amount = amount
    metadata.redeem_value = redeemValue
  } else {
    metadata.store_credit_amount = amount
  }
  try {
    await replaceLines(container, cart, reference, [
      {
        cart_id: cart.id,
        amount: money.shiftedBy(-digits).toFixed(),
        reference,
        reference_id: cart.id,
        metadata,
      },
    ])
    await refresh(container, cart.id)
  } catch (error) {
    // The hold without its credit line would be released at order.placed anyway; release now.
    await releaseKinds(container, cart, customerId, [kind]).catch(() => undefined)
    throw error
  }
  return { hold, money_minor: money.toFixed(), redeem_value: redeemValue ?? null }
}

/**
 * Remove Dust's credit lines of the given kinds and release their holds. `dust.release`
 * releases every hold of the cart, so the other kind's line is reserved again (and
 * removed too if its amount is no longer available).
 */
export async function releaseKinds(container: MedusaContainer, cart: Row, customerId: string, kinds: Kind[]) {
  const dust = dustService(container)
  const released = await dust.client.request<Row>("dust.release", { cart_id: cart.id })
  for (const kind of kinds) {
    await replaceLines(container, cart, referenceOf(kind), [])
  }
  const kept: Row[] = []
  for (const kind of (["dust", "store_credit"] as Kind[]).filter((k) => !kinds.includes(k))) {
    for (const line of linesOf(cart, referenceOf(kind))) {
      const amount = Number(kind === "dust" ? line.metadata?.dust_amount : line.metadata?.store_credit_amount)
      const again = Number.isSafeInteger(amount) && amount > 0
        ? await dust.client.request<Row>("dust.reserve", {
            cart_id: cart.id,
            customer_id: customerId,
            amount,
            kind,
            currency_code: String(cart.currency_code).toLowerCase(),
          })
        : null
      if (again?.status === "reserved") {
        kept.push({ kind, amount })
      } else {
        await replaceLines(container, cart, referenceOf(kind), [])
      }
    }
  }
  await refresh(container, cart.id)
  return { released: released?.amount ?? 0, kept }
}

