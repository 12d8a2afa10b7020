/** Formatting shared by the Dust components: dust as whole numbers, money by its currency's digits. */

const LOCALE = "en-US"

export function formatDust(amount: number): string {
  return `${new Intl.NumberFormat(LOCALE).format(amount)} dust`
}

/** The currency's minor-unit digits (usd 2, jpy 0, kwd 3), as Intl knows them. */
export function currencyDigits(currency: string): number {
  return new Intl.NumberFormat(LOCALE, { style: "currency", currency: currency.toUpperCase() }).resolvedOptions()
    .maximumFractionDigits ?? 2
}

/** Money in major units (Medusa's amounts: 25.99) -> "$25.99". */
export function formatMoney(amount: number, currency: string): string {
  return new Intl.NumberFormat(LOCALE, { style: "currency", currency: currency.toUpperCase() }).format(amount)
}

/** Money in integer minor units (Dust's amounts: 12935) -> "$129.35", "¥1,200". */
export function formatMinor(minor: number, currency: string): string {
  return formatMoney(minor / 10 ** currencyDigits(currency), currency)
}

/** What `amount` dust pays in minor units: amount x redeem value, rounded down (the plugin's rule). */
export function dustToMinor(amount: number, redeemValue: string): number {
  const match = /^(\d+)(?:\.(\d+))?$/.exec(redeemValue.trim())
  if (!match) return 0
  const fraction = match[2] ?? ""
  const scaled = BigInt(match[1] + fraction)
  return Number((BigInt(amount) * scaled) / 10n ** BigInt(fraction.length))
}

export function formatDate(iso: string): string {
  const d = new Date(iso)
  return Number.isNaN(d.getTime())
    ? iso
    : d.toLocaleString(LOCALE, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" })
}
