import { type Checked, wholeAmount } from "./validate"

/**
 * A product's dust settings as the plugin's mapping reads them from Medusa's metadata
 * (src/lib/mapping.ts `dustSettings`: `dust_only` true/"true"/1, `dust_price` a whole
 * number or its text); what the form shows.
 */
export function readSettings(metadata: Record<string, unknown> | null | undefined): {
  dustOnly: boolean
  price: string
} {
  const meta = metadata ?? {}
  const only = meta.dust_only
  const dustOnly = only === true || only === "true" || only === 1 || only === "1"
  const raw = meta.dust_price
  const price =
    (typeof raw === "number" && Number.isSafeInteger(raw) && raw >= 0) ||
    (typeof raw === "string" && /^\d{1,15}$/.test(raw.trim()))
      ? String(raw).trim()
      : ""
  return { dustOnly, price }
}

/**
 * The metadata to save, or why not: a dust-only product needs a price, a whole number of
 * dust of at least 1; a product that is not dust-only may keep a price or have none
 * (an empty value removes the key: Medusa deletes metadata keys set to "").
 */
export function settingsMetadata(dustOnly: boolean, priceText: string): Checked<Record<string, unknown>> {
  if (priceText.trim() === "") {
    if (dustOnly) {
      return { ok: false, error: "A dust-only product needs a dust price: a whole number of dust, at least 1." }
    }
    return { ok: true, value: { dust_only: false, dust_price: "" } }
  }
  const price = wholeAmount(priceText, "The dust price")
  if (!price.ok) {
    return price
  }
  return { ok: true, value: { dust_only: dustOnly, dust_price: price.value } }
}
