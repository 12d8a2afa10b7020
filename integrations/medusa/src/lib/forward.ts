/**
 * Forwarding: load a Medusa entity with `query.graph` (events carry only ids), map it with
 * `mapping.ts`, publish it to Dust. Used by the subscribers and by the catch-up, so both
 * send exactly the same envelope for the same entity.
 */
import { ContainerRegistrationKeys } from "@medusajs/framework/utils"
import type { MedusaContainer } from "@medusajs/framework/types"
import {
  Envelope,
  MappingError,
  checkDigits,
  customerEnvelope,
  dustSettings,
  DustProductSettings,
  orderCanceledEnvelope,
  orderPlacedEnvelope,
  productEnvelope,
  refundEnvelope,
  refundOfCancel,
  returnEnvelope,
} from "./mapping"
import { dustService } from "./service"

type Row = Record<string, any>

export const ORDER_FIELDS = [
  "id",
  "customer_id",
  "currency_code",
  "created_at",
  "updated_at",
  "canceled_at",
  "metadata",
  "total",
  "credit_line_total",
  "shipping_total",
  "shipping_tax_total",
  "tax_total",
  "customer.id",
  "customer.has_account",
  "cart.id",
  "credit_lines.id",
  "credit_lines.version",
  "credit_lines.reference",
  "credit_lines.reference_id",
  "credit_lines.amount",
  "credit_lines.metadata",
  "items.id",
  "items.product_id",
  "items.quantity",
  "items.total",
  "items.tax_total",
  "items.is_giftcard",
]

async function graph(container: MedusaContainer, entity: string, fields: string[], filters: Row): Promise<Row[]> {
  const query = container.resolve(ContainerRegistrationKeys.QUERY)
  const { data } = await query.graph({ entity, fields, filters })
  return data as Row[]
}

async function one(container: MedusaContainer, entity: string, fields: string[], id: string): Promise<Row> {
  const [row] = await graph(container, entity, fields, { id })
  if (!row) {
    throw new MappingError(`${entity} ${id} not found`)
  }
  return row
}

/** The currency's `decimal_digits`, from Medusa's currency entity. */
export async function currencyDigits(container: MedusaContainer, code: string): Promise<number> {
  const [currency] = await graph(container, "currency", ["code", "decimal_digits"], { code: code.toLowerCase() })
  if (!currency) {
    throw new MappingError(`currency ${code} not found in Medusa`)
  }
  return checkDigits(currency.decimal_digits, code)
}

async function publish(container: MedusaContainer, envelope: Envelope | null): Promise<Envelope | null> {
  if (envelope) {
    await dustService(container).client.publishEvent(envelope)
    container.resolve(ContainerRegistrationKeys.LOGGER).info(`dust: published ${envelope.id}`)
  }
  return envelope
}

// -- entities ------------------------------------------------------------------------

export async function orderPlaced(container: MedusaContainer, orderId: string): Promise<Envelope> {
  const order = await one(container, "order", ORDER_FIELDS, orderId)
  const digits = await currencyDigits(container, order.currency_code)
  return orderPlacedEnvelope(order, digits)
}

export async function forwardOrderPlaced(container: MedusaContainer, orderId: string) {
  return publish(container, await orderPlaced(container, orderId))
}

export async function forwardOrderCanceled(container: MedusaContainer, orderId: string) {
  const order = await one(container, "order", ["id", "canceled_at", "updated_at"], orderId)
  return publish(container, orderCanceledEnvelope(order))
}

export async function forwardCustomer(
  container: MedusaContainer,
  name: "customer.created" | "customer.updated",
  customerId: string
) {
  const customer = await one(
    container,
    "customer",
    ["id", "email", "has_account", "created_at", "updated_at", "groups.id"],
    customerId
  )
  return publish(container, customerEnvelope(name, customer))
}

export async function forwardProduct(
  container: MedusaContainer,
  name: "product.created" | "product.updated",
  productId: string
) {
  const product = await one(container, "product", ["id", "metadata", "created_at", "updated_at"], productId)
  return publish(container, productEnvelope(name, product))
}

const REFUND_ORDER_FIELDS = [
  "id",
  "customer_id",
  "currency_code",
  "canceled_at",
  "metadata",
  "customer.id",
  "customer.has_account",
]

/** The order a payment belongs to (Medusa links orders to payment collections). */
async function orderOfPayment(container: MedusaContainer, payment: Row): Promise<Row> {
  const [link] = await graph(container, "order_payment_collection", ["order_id", "order.id"], {
    payment_collection_id: payment.payment_collection_id,
  })
  const orderId = link?.order?.id ?? link?.order_id
  if (!orderId) {
    throw new MappingError(`payment ${payment.id} belongs to no order`)
  }
  return one(container, "order", REFUND_ORDER_FIELDS, orderId)
}

export interface RefundForwarding {
  envelopes: Envelope[]
  order: Row
}

/**
 * Every refund of a payment as `refund.created` (one per Medusa refund). Medusa's
 * `payment.refunded` names the payment only; its refunds already sent are redelivered
 * with the same id and content, which Dust records once.
 */
export async function paymentRefunds(
  container: MedusaContainer,
  paymentId: string,
  onlyRefundIds?: Set<string>
): Promise<RefundForwarding> {
  const payment = await one(
    container,
    "payment",
    [
      "id",
      "currency_code",
      "payment_collection_id",
      "refunds.id",
      "refunds.amount",
      "refunds.created_at",
      "refunds.refund_reason_id",
    ],
    paymentId
  )
  const order = await orderOfPayment(container, payment)
  const currency = String(payment.currency_code ?? order.currency_code)
  const digits = await currencyDigits(container, currency)
  const toStoreCredit = dustService(container).options.refundsToStoreCredit
  const envelopes: Envelope[] = []
  const refunds = ((payment.refunds ?? []) as Row[]).sort((a, b) =>
    String(a.created_at).localeCompare(String(b.created_at)) || String(a.id).localeCompare(String(b.id))
  )
  for (const refund of refunds) {
    if ((onlyRefundIds && !onlyRefundIds.has(refund.id)) || refundOfCancel(refund, order)) {
      continue
    }
    const envelope = refundEnvelope(refund, order, currency, digits, toStoreCredit)
    if (envelope) {
      envelopes.push(envelope)
    }
  }
  return { envelopes, order }
}

export async function forwardPaymentRefunds(
  container: MedusaContainer,
  paymentId: string,
  onlyRefundIds?: Set<string>
): Promise<RefundForwarding> {
  const found = await paymentRefunds(container, paymentId, onlyRefundIds)
  for (const envelope of found.envelopes) {
    await publish(container, envelope)
  }
  return found
}

export async function productSettings(
  container: MedusaContainer,
  productIds: string[]
): Promise<Map<string, DustProductSettings>> {
  const settings = new Map<string, DustProductSettings>()
  if (productIds.length === 0) {
    return settings
  }
  for (const product of await graph(container, "product", ["id", "metadata"], { id: productIds })) {
    settings.set(product.id, dustSettings(product.metadata))
  }
  return settings
}

/** A received return as `refund.created` with the dust its dust-only items cost; null when none. */
export async function returnReceived(container: MedusaContainer, returnId: string): Promise<Envelope | null> {
  const returned = await one(
    container,
    "return",
    [
      "id",
      "order_id",
      "created_at",
      "received_at",
      "items.item_id",
      "items.quantity",
      "items.received_quantity",
      "items.damaged_quantity",
    ],
    returnId
  )
  const order = await one(container, "order", [...REFUND_ORDER_FIELDS, "items.id", "items.product_id"], returned.order_id)
  const productIds = [...new Set(((order.items ?? []) as Row[]).map((i) => i.product_id).filter(Boolean))]
  return returnEnvelope(returned, order, await productSettings(container, productIds))
}

export async function forwardReturnReceived(container: MedusaContainer, returnId: string) {
  return publish(container, await returnReceived(container, returnId))
}
