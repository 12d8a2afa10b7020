/**
 * Pay part of a cart with dust: the customer enters whole dust, the plugin reserves it in
 * Dust and puts a credit line on the cart (`POST /store/dust/apply-to-cart`); "Remove"
 * releases it. `required` is the dust the cart's dust-only items cost: the checkout should
 * not complete with less applied.
 */
import { useState, type FormEvent } from "react"
import { toDustError, type DustClient } from "./client"
import { dustToMinor, formatDust, formatMinor } from "./format"

type CreditLine = { reference?: string | null; amount?: unknown; metadata?: Record<string, unknown> | null }
export type CartWithCredit = { id: string; currency_code: string; credit_lines?: CreditLine[] | null }

/** The dust applied to a cart: `metadata.dust_amount` of its `reference: "dust"` credit lines. */
export function appliedDust(cart: CartWithCredit): number {
  return (cart.credit_lines ?? [])
    .filter((line) => line.reference === "dust")
    .reduce((sum, line) => sum + Number(line.metadata?.dust_amount ?? 0), 0)
}

type Props = {
  dust: DustClient
  cart: CartWithCredit
  /** dust the customer can spend (the balance's `available`; what this cart holds counts as available to it) */
  available: number
  /** money value of one dust in the cart's currency, minor units */
  redeemValue: string
  /** dust needed for the cart's dust-only items */
  required?: number
  /** called after the cart changed: reload it (totals) and the balance */
  onChange: () => void | Promise<void>
}

export function ApplyDust({ dust, cart, available, redeemValue, required = 0, onChange }: Props) {
  const applied = appliedDust(cart)
  const [value, setValue] = useState(String(applied || required || ""))
  const [error, setError] = useState<string | null>(null)
  const [busy, setBusy] = useState(false)
  const spendable = available + applied

  async function run(work: () => Promise<unknown>) {
    setBusy(true)
    setError(null)
    try {
      await work()
      await onChange()
    } catch (e) {
      setError(toDustError(e).message)
    } finally {
      setBusy(false)
    }
  }

  function submit(event: FormEvent) {
    event.preventDefault()
    const text = value.trim()
    if (!/^\d+$/.test(text) || Number(text) <= 0) {
      setError("Enter a whole number of dust greater than 0, like 500.")
      return
    }
    const amount = Number(text)
    if (!Number.isSafeInteger(amount) || amount > spendable) {
      setError(`You have ${formatDust(spendable)} available.`)
      return
    }
    if (amount < required) {
      setError(`The dust-only items in your cart cost ${formatDust(required)}: apply at least that.`)
      return
    }
    void run(() => dust.applyToCart(cart.id, amount, "dust"))
  }

  return (
    <section className="dust-card" aria-labelledby="apply-dust-title" data-testid="apply-dust">
      <h2 id="apply-dust-title">Pay with dust</h2>
      {applied > 0 ? (
        <p data-testid="dust-applied">
          {formatDust(applied)} applied ({formatMinor(dustToMinor(applied, redeemValue), cart.currency_code)} off)
        </p>
      ) : null}
      {required > applied ? (
        <p className="dust-notice">Your cart has dust-only items: apply at least {formatDust(required)}.</p>
      ) : null}
      <form onSubmit={submit} noValidate>
        <label>
          Dust to apply
          <input
            name="dust"
            inputMode="numeric"
            value={value}
            onChange={(e) => setValue(e.target.value)}
            aria-invalid={error ? true : undefined}
            aria-describedby={error ? "apply-dust-error" : undefined}
          />
        </label>
        <span className="dust-muted"> of {formatDust(spendable)} available</span>
        <div className="dust-actions">
          <button type="submit" disabled={busy}>
            {busy ? "Applying…" : applied > 0 ? "Change" : "Apply dust"}
          </button>
          {applied > 0 ? (
            <button type="button" disabled={busy} onClick={() => void run(() => dust.removeFromCart(cart.id, "dust"))}>
              Remove
            </button>
          ) : null}
        </div>
      </form>
      {error ? (
        <p role="alert" id="apply-dust-error" className="dust-error">
          {error}
        </p>
      ) : null}
    </section>
  )
}
