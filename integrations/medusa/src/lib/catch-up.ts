/**
 * The catch-up: Medusa's local event bus does not retry a failed subscriber and loses the
 * events in flight when the process dies, so forwarding alone can lose an order. The
 * catch-up lists what changed since a watermark (orders placed and canceled, refunds,
 * received returns, products) and forwards every envelope the plugin has not published
 * yet (the published marks are written in the same MULTI as the message). Envelope ids
 * are deterministic, so a second run, or a run racing a subscriber, changes nothing in
 * Dust. Guest orders refunded to store credit get their claim code written if it is
 * still missing.
 */
import { ContainerRegistrationKeys, Modules } from "@medusajs/framework/utils"
import type { MedusaContainer } from "@medusajs/framework/types"
import { DustUnavailable } from "./celery"
import { recordGuestClaimCodes } from "./claim-codes"
import {
  forwardOrderCanceled,
  forwardOrderPlaced,
  forwardPaymentRefunds,
  forwardProduct,
  paymentRefunds,
  returnReceived,
} from "./forward"
import { Envelope, dustCustomerId, isoTime } from "./mapping"
import { dustService } from "./service"

type Row = Record<string, any>

export const WATERMARK_KEY = "dust:medusa:catch-up:watermark"
const PAGE = 200

export interface CatchUpReport {
  since: string
  until: string
  published: Record<string, number>
  already_published: number
  claim_codes_written: number
  errors: string[]
}

async function listAll(container: MedusaContainer, entity: string, fields: string[], filters: Row): Promise<Row[]> {
  const query = container.resolve(ContainerRegistrationKeys.QUERY)
  const rows: Row[] = []
  for (let skip = 0; ; skip += PAGE) {
    const { data } = await query.graph({ entity, fields, filters, pagination: { skip, take: PAGE, order: { id: "ASC" } } })
    rows.push(...(data as Row[]))
    if ((data as Row[]).length < PAGE) {
      return rows
    }
  }
}

export async function catchUp(container: MedusaContainer, options: { since?: Date } = {}): Promise<CatchUpReport> {
  const dust = dustService(container)
  const logger = container.resolve(ContainerRegistrationKeys.LOGGER)
  const until = new Date()
  let since = options.since
  if (!since) {
    const mark = await dust.client.getValue(WATERMARK_KEY)
    since = mark
      ? new Date(new Date(mark).getTime() - dust.options.catchUpOverlapMinutes * 60_000)
      : new Date(until.getTime() - dust.options.catchUpLookbackMinutes * 60_000)
  }
  const report: CatchUpReport = {
    since: since.toISOString(),
    until: until.toISOString(),
    published: {},
    already_published: 0,
    claim_codes_written: 0,
    errors: [],
  }
  const count = (envelope: Envelope | null) => {
    if (envelope) {
      report.published[envelope.name] = (report.published[envelope.name] ?? 0) + 1
    }
  }
  const range = { $gte: since, $lte: until }
  // Dust unreachable: the window is tried again next time (the watermark stays). Anything
  // else (an entity that cannot be mapped) is reported and logged, and does not hold back
  // the watermark forever.
  let transient = false
  const failed = (what: string, error: unknown) => {
    transient ||= error instanceof DustUnavailable
    report.errors.push(`${what}: ${(error as Error)?.message ?? error}`)
    logger.error(`dust: catch-up could not forward ${what}: ${(error as Error)?.message ?? error}`)
  }

  /** Run `send` for each id whose envelope id is not marked published. */
  async function unpublished(pairs: [string, string][], send: (id: string) => Promise<void>) {
    const done = await dust.client.published(pairs.map(([envelopeId]) => envelopeId))
    for (const [envelopeId, id] of pairs) {
      if (done.has(envelopeId)) {
        report.already_published++
        continue
      }
      try {
        await send(id)
      } catch (error) {
        failed(envelopeId, error)
      }
    }
  }

  // Products first: an order's dust-only items must be known before the order.
  const products = await listAll(container, "product", ["id", "created_at", "updated_at"], { updated_at: range })
  await unpublished(
    products.map((p) => [`product.updated:${p.id}:${isoTime(p.updated_at)}`, p.id]),
    async (id) => count(await forwardProduct(container, "product.updated", id))
  )

  const placed = await listAll(container, "order", ["id"], { created_at: range })
  await unpublished(
    placed.map((o) => [`order.placed:${o.id}`, o.id]),
    async (id) => count(await forwardOrderPlaced(container, id))
  )

  const canceled = await listAll(container, "order", ["id"], { canceled_at: range })
  await unpublished(
    canceled.map((o) => [`order.canceled:${o.id}`, o.id]),
    async (id) => count(await forwardOrderCanceled(container, id))
  )

  // A refund younger than a cancel takes may belong to a cancel still running (its order
  // not canceled yet): refunds are looked at once they are two minutes old (at most half the overlap) (the overlap of
  // the next run covers the rest).
  const settle = Math.min(120_000, (dust.options.catchUpOverlapMinutes * 60_000) / 2)
  const settled = new Date(Math.max(since.getTime(), until.getTime() - settle))
  const refunds = (await container
    .resolve(Modules.PAYMENT)
    .listRefunds({ created_at: { $gte: since, $lte: settled } } as any, { select: ["id", "payment_id"], relations: ["payment"], take: null } as any)) as Row[]
  const refundsByPayment = new Map<string, Set<string>>()
  const refundPairs: [string, string][] = []
  for (const refund of refunds) {
    refundPairs.push([`refund.created:${refund.id}`, refund.id])
    const paymentId = refund.payment_id ?? refund.payment?.id
    if (paymentId) {
      refundsByPayment.set(paymentId, (refundsByPayment.get(paymentId) ?? new Set()).add(refund.id))
    }
  }
  const missingRefunds = new Set<string>()
  await unpublished(refundPairs, async (id) => {
    missingRefunds.add(id)
  })
  for (const [paymentId, ids] of refundsByPayment) {
    try {
      const wanted = new Set([...ids].filter((id) => missingRefunds.has(id)))
      const { envelopes, order } =
        wanted.size > 0
          ? await forwardPaymentRefunds(container, paymentId, wanted)
          : await paymentRefunds(container, paymentId, ids)
      envelopes.forEach((e) => wanted.has(String(e.data.id)) && count(e))
      if (dustCustomerId(order) === null && dust.options.refundsToStoreCredit) {
        const known = (order.metadata?.dust_store_credit_codes ?? {}) as Row
        const missing = envelopes.map((e) => String(e.data.id)).filter((id) => !known[id])
        if (missing.length > 0) {
          const written = await recordGuestClaimCodes(container, order, missing, 0)
          report.claim_codes_written += Object.keys(written).length
        }
      }
    } catch (error) {
      failed(`payment ${paymentId}`, error)
    }
  }

  const returns = (await container
    .resolve(Modules.ORDER)
    .listReturns({ received_at: range } as any, { select: ["id"], take: null } as any)) as Row[]
  await unpublished(
    returns.map((r) => [`refund.created:return:${r.id}`, r.id]),
    async (id) => {
      const envelope = await returnReceived(container, id)
      if (envelope) {
        await dust.client.publishEvent(envelope)
        logger.info(`dust: published ${envelope.id}`)
        count(envelope)
      }
    }
  )

  if (!transient) {
    const previous = await dust.client.getValue(WATERMARK_KEY)
    if (!previous || new Date(previous) < until) {
      await dust.client.setValue(WATERMARK_KEY, until.toISOString())
    }
    // Marks older than anything the catch-up looks at again are of no more use.
    const horizon = Math.max(dust.options.catchUpLookbackMinutes, dust.options.catchUpOverlapMinutes) * 2
    await dust.client.prunePublished(new Date(until.getTime() - horizon * 60_000))
  }
  logger.info(`dust: catch-up ${report.since}..${report.until}: ${JSON.stringify(report.published)}, ${report.already_published} already published, ${report.errors.length} errors`)
  return report
}
