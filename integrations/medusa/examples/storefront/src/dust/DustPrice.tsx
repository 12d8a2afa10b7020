/**
 * A product's price: in dust for a dust-only product (its `metadata.dust_price`, read through
 * `GET /store/dust/products`), in money otherwise. `useDustProducts` loads the settings of
 * the products on a page in one request.
 */
import { useEffect, useState } from "react"
import { DustError, toDustError, type DustClient, type DustProduct } from "./client"
import { formatDust, formatMoney } from "./format"

export function useDustProducts(dust: DustClient, productIds: string[]) {
  const [settings, setSettings] = useState<Map<string, DustProduct> | null>(null)
  const [error, setError] = useState<DustError | null>(null)
  const key = [...productIds].sort().join(",")

  useEffect(() => {
    let live = true
    setError(null)
    dust
      .products(key ? key.split(",") : [])
      .then((products) => live && setSettings(new Map(products.map((p) => [p.id, p]))))
      .catch((e) => live && setError(toDustError(e)))
    return () => {
      live = false
    }
  }, [dust, key])

  return { settings, error }
}

type Props = {
  /** the product's Dust settings; undefined while they load */
  settings: DustProduct | undefined
  /** the variant's money price, in major units as Medusa gives it (25.99) */
  amount?: number | null
  currency: string
  /** the settings could not be read: no price is shown rather than a wrong one */
  error?: DustError | null
}

export function isDustOnly(settings: DustProduct | undefined): settings is DustProduct & { dust_price: number } {
  return Boolean(settings?.dust_only && settings.dust_price && settings.dust_price > 0)
}

export function DustPrice({ settings, amount, currency, error }: Props) {
  if (error) {
    return (
      <span className="dust-price dust-error" role="status">
        Price unavailable: {error.message}
      </span>
    )
  }
  if (isDustOnly(settings)) {
    return (
      <span className="dust-price dust-price-dust" data-testid="dust-price">
        {formatDust(settings.dust_price)} <span className="dust-badge">dust only</span>
      </span>
    )
  }
  if (amount === undefined || amount === null) {
    return <span className="dust-price dust-muted">—</span>
  }
  return (
    <span className="dust-price" data-testid="money-price">
      {formatMoney(amount, currency)}
    </span>
  )
}
