/**
 * The signed-in customer's dust: balance, held (reserved by an open checkout), pending and
 * available, what the available dust is worth in `currency`, and store credit per currency.
 * Refetches when `refreshKey` changes (after an order, after applying dust).
 */
import { useCallback, useEffect, useState } from "react"
import { DustError, redeemValue, toDustError, type DustBalanceReply, type DustClient } from "./client"
import { dustToMinor, formatDust, formatMinor } from "./format"

type Props = {
  dust: DustClient
  /** the shop's currency, for the money value of the available dust */
  currency?: string
  refreshKey?: unknown
  /** called with each balance read (e.g. for ApplyDust's available amount) */
  onLoaded?: (balance: DustBalanceReply) => void
}

export function DustBalance({ dust, currency, refreshKey, onLoaded }: Props) {
  const [balance, setBalance] = useState<DustBalanceReply | null>(null)
  const [error, setError] = useState<DustError | null>(null)
  const [loading, setLoading] = useState(true)

  const load = useCallback(async () => {
    setLoading(true)
    setError(null)
    try {
      const reply = await dust.balance()
      setBalance(reply)
      onLoaded?.(reply)
    } catch (e) {
      setError(toDustError(e))
    } finally {
      setLoading(false)
    }
  }, [dust, onLoaded])

  useEffect(() => {
    void load()
  }, [load, refreshKey])

  return (
    <section className="dust-card" aria-labelledby="dust-balance-title" data-testid="dust-balance">
      <h2 id="dust-balance-title">Your dust</h2>
      {error ? (
        <div role="alert" className="dust-error">
          <p>{error.message}</p>
          <button type="button" onClick={() => void load()}>
            Try again
          </button>
        </div>
      ) : !balance ? (
        <p aria-busy="true">Loading your dust…</p>
      ) : (
        <>
          <p className="dust-balance-available">
            <span data-testid="dust-available">{formatDust(balance.dust.available)}</span> available
            {currency ? (
              <span className="dust-muted">
                {" "}
                (worth {formatMinor(dustToMinor(balance.dust.available, redeemValue(balance, currency)), currency)})
              </span>
            ) : null}
          </p>
          <dl className="dust-figures">
            <dt>Balance</dt>
            <dd data-testid="dust-balance-total">{formatDust(balance.dust.balance)}</dd>
            <dt>Held at checkout</dt>
            <dd data-testid="dust-held">{formatDust(balance.dust.held)}</dd>
            {balance.dust.pending ? (
              <>
                <dt>Pending</dt>
                <dd data-testid="dust-pending">{formatDust(balance.dust.pending)}</dd>
              </>
            ) : null}
          </dl>
          {balance.store_credit.length > 0 ? (
            <>
              <h3>Store credit</h3>
              <ul className="dust-store-credit">
                {balance.store_credit.map((sc) => (
                  <li key={sc.currency_code}>
                    {formatMinor(sc.available, sc.currency_code)} available
                    {sc.held ? <span className="dust-muted"> ({formatMinor(sc.held, sc.currency_code)} held)</span> : null}
                  </li>
                ))}
              </ul>
            </>
          ) : null}
          {loading ? <p className="dust-muted">Refreshing…</p> : null}
        </>
      )}
    </section>
  )
}
