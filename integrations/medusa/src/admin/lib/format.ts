/** Formatting shared by the widgets and the Dust page: money by the currency's digits. */

/** The currency's minor-unit digits (usd 2, jpy 0, kwd 3), from the platform's Intl data. */
export function currencyDigits(currency: string): number {
  try {
    return new Intl.NumberFormat("en-US", { style: "currency", currency: currency.toUpperCase() })
      .resolvedOptions().maximumFractionDigits ?? 2
  } catch {
    return 2
  }
}

/**
 * An integer amount in minor units as money: `formatMoney(12935, "usd") === "$129.35"`,
 * `formatMoney(1200, "jpy") === "¥1,200"`. Exact: the minor units are split as text, never
 * divided as a binary float.
 */
export function formatMoney(minor: number, currency: string): string {
  const code = currency.toUpperCase()
  const digits = currencyDigits(code)
  const negative = minor < 0
  const text = String(Math.abs(Math.trunc(minor))).padStart(digits + 1, "0")
  const whole = text.slice(0, text.length - digits) || "0"
  const fraction = digits ? text.slice(text.length - digits) : ""
  let formatter: Intl.NumberFormat
  try {
    formatter = new Intl.NumberFormat("en-US", {
      style: "currency",
      currency: code,
      minimumFractionDigits: digits,
      maximumFractionDigits: digits,
    })
  } catch {
    return `${negative ? "-" : ""}${code} ${whole}${digits ? "." + fraction : ""}`
  }
  // Format the whole part (BigInt keeps large amounts exact), then put the exact fraction in.
  const parts = formatter.formatToParts(BigInt(whole) as unknown as number)
  const out = parts
    .map((part) => (part.type === "fraction" ? fraction : part.type === "minusSign" ? "" : part.value))
    .join("")
  return negative ? `-${out}` : out
}

/** Whole dust with grouping: `formatDust(12500) === "12,500"`. */
export function formatDust(amount: number): string {
  return new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 }).format(amount)
}

/** An ISO time as the admin's locale shows it (the raw text when it is not a time). */
export function formatTime(iso: string | null | undefined): string {
  if (!iso) return "—"
  const time = new Date(iso)
  return Number.isNaN(time.getTime())
    ? iso
    : time.toLocaleString("en-US", { timeZone: "UTC", dateStyle: "medium", timeStyle: "short" }) + " UTC"
}
