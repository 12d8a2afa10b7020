/**
 * The signed-in customer's ledger entries, newest first, a page at a time ("Show more"
 * follows the route's `next` cursor). Refetches from the first page when `refreshKey` changes.
 */
import { useCallback, useEffect, useState } from "react"
import { DustError, toDustError, type DustClient, type DustEntry, type DustKind } from "./client"
import { formatDate, formatDust, formatMinor } from "./format"

const LABELS: Record<string, string> = {
  earn: "Earned on an order",
  spend: "Paid an order",
  cancel: "Order canceled: given back",
  clawback: "Taken back after a refund",
  refund: "Refund",
  return: "Returned item",
  adjustment: "Adjusted by the store",
  claim: "Store credit claimed",
  welcome: "Welcome gift",
  expiry: "Expired",
}

export function describeEntry(entry: DustEntry): string {
  const label = LABELS[entry.reason ?? ""] ?? entry.reason ?? entry.reference_type ?? "Entry"
  return entry.memo ? `${label}: ${entry.memo}` : label
}

type Props = {
  dust: DustClient
  kind?: DustKind
  pageSize?: number
  refreshKey?: unknown
}

export function DustHistory({ dust, kind = "dust", pageSize = 10, refreshKey }: Props) {
  const [entries, setEntries] = useState<DustEntry[] | null>(null)
  const [next, setNext] = useState<string | null>(null)
  const [error, setError] = useState<DustError | null>(null)
  const [loading, setLoading] = useState(false)

  const load = useCallback(
    async (before: string | null) => {
      setLoading(true)
      setError(null)
      try {
        const page = await dust.history({ kind, limit: pageSize, before })
        setEntries((old) => (before && old ? [...old, ...page.entries] : page.entries))
        setNext(page.next)
      } catch (e) {
        setError(toDustError(e))
      } finally {
        setLoading(false)
      }
    },
    [dust, kind, pageSize]
  )

  useEffect(() => {
    void load(null)
  }, [load, refreshKey])

  const amount = (e: DustEntry) => {
    const sign = e.direction === "debit" ? "−" : "+"
    const value = e.kind === "dust" ? formatDust(e.amount) : formatMinor(e.amount, e.currency_code ?? "usd")
    return `${sign}${value}`
  }

  return (
    <section className="dust-card" aria-labelledby="dust-history-title" data-testid="dust-history">
      <h2 id="dust-history-title">{kind === "dust" ? "Dust history" : "Store credit history"}</h2>
      {entries === null && !error ? <p aria-busy="true">Loading your history…</p> : null}
      {entries && entries.length === 0 ? <p>No entries yet.</p> : null}
      {entries && entries.length > 0 ? (
        <table className="dust-history">
          <thead>
            <tr>
              <th scope="col">Date</th>
              <th scope="col">What</th>
              <th scope="col">Amount</th>
              <th scope="col">Balance</th>
            </tr>
          </thead>
          <tbody>
            {entries.map((e) => (
              <tr key={e.id} data-testid="dust-entry" className={e.direction === "debit" ? "dust-debit" : "dust-credit"}>
                <td>{formatDate(e.created_at)}</td>
                <td>{describeEntry(e)}</td>
                <td>{amount(e)}</td>
                <td>{e.kind === "dust" ? formatDust(e.balance_after) : formatMinor(e.balance_after, e.currency_code ?? "usd")}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      {error ? (
        <div role="alert" className="dust-error">
          <p>{error.message}</p>
          <button type="button" onClick={() => void load(entries && next ? next : null)}>
            Try again
          </button>
        </div>
      ) : null}
      {next && !error ? (
        <button type="button" disabled={loading} onClick={() => void load(next)}>
          {loading ? "Loading…" : "Show more"}
        </button>
      ) : null}
    </section>
  )
}
