import { MedusaError } from "@medusajs/framework/utils"
import { z } from "@medusajs/framework/zod"

/** Whole amounts only: 1.5, "10", true or null are a 400. */
const amount = z.number().int().positive().max(Number.MAX_SAFE_INTEGER)
const kind = z.enum(["dust", "store_credit"])
const currency = z.string().regex(/^[A-Za-z]{3}$/).transform((c) => c.toLowerCase())

export const StoreApplyToCart = z
  .object({
    cart_id: z.string().min(1).max(200),
    /** dust (kind "dust") or minor units (kind "store_credit"); 0 removes that kind */
    amount: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
    kind: kind.default("dust"),
  })
  .strict()
export type StoreApplyToCartType = z.infer<typeof StoreApplyToCart>

export const StoreRemoveFromCart = z
  .object({
    cart_id: z.string().min(1).max(200),
    kind: kind.optional(),
  })
  .strict()

export const StoreTransactions = z
  .object({
    kind: kind.default("dust"),
    currency_code: currency.optional(),
    limit: z.coerce.number().int().min(1).max(100).default(20),
    before: z.string().min(1).max(500).optional(),
  })
  .strict()

export const StoreProducts = z
  .object({
    id: z.union([z.string().min(1), z.array(z.string().min(1)).min(1).max(100)]),
  })
  .strict()

export const StoreClaim = z.object({ code: z.string().trim().min(1).max(40) }).strict()
export type StoreClaimType = z.infer<typeof StoreClaim>

export const AdminAdjust = z
  .object({
    customer_id: z.string().trim().min(1).max(200),
    amount,
    reason: z.string().trim().min(1).max(2000),
    kind: kind.default("dust"),
    currency_code: currency.optional(),
    idempotency_key: z.string().trim().min(1).max(200).optional(),
  })
  .strict()
export type AdminAdjustType = z.infer<typeof AdminAdjust>

export const AdminOverview = z
  .object({ limit: z.coerce.number().int().min(1).max(100).default(20) })
  .strict()

export const AdminResolve = z.object({ reason: z.string().trim().min(1).max(2000) }).strict()
export type AdminResolveType = z.infer<typeof AdminResolve>

export const AdminCatchUp = z
  .object({
    since: z
      .string()
      .refine((s) => !Number.isNaN(Date.parse(s)), "since must be an ISO 8601 time")
      .optional(),
  })
  .strict()
export type AdminCatchUpType = z.infer<typeof AdminCatchUp>

/** Parse a query string with a schema; a ZodError becomes Medusa's 400. */
export function parseQuery<T extends z.ZodTypeAny>(schema: T, query: unknown): z.infer<T> {
  const parsed = schema.safeParse(query)
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join(".") || "query"}: ${i.message}`)
    throw new MedusaError(MedusaError.Types.INVALID_DATA, `Invalid request: ${problems.join("; ")}`)
  }
  return parsed.data
}
