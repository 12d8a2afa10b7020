import { defineRouteConfig } from "@medusajs/admin-sdk"
import { CurrencyDollar } from "@medusajs/icons"
import { Alert, Badge, Button, Container, Heading, Input, Label, StatusBadge, Table, Text } from "@medusajs/ui"
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query"
import { useState } from "react"
import { ErrorNote, FormError } from "../../components/error-note"
import { type DustEvent, type DustOverview, dustApi } from "../../lib/api"
import { formatDust, formatMoney, formatTime } from "../../lib/format"
import { reasonText } from "../../lib/validate"

/**
 * Dust at a glance for the store's staff: the last reconciliation of the ledger, the events
 * that need a person (with Dust's reasons; each can be resolved with a reason of one's own),
 * and what the store owes its customers per currency.
 */
export function DustPage() {
  const overview = useQuery({ queryKey: ["dust", "overview"], queryFn: () => dustApi.overview(50), retry: false })
  return (
    <div className="flex flex-col gap-y-3" data-testid="dust-page">
      <Container className="px-6 py-4">
        <Heading level="h1">Dust</Heading>
        <Text className="text-ui-fg-subtle">Loyalty points and store credit: the ledger's health and what the store owes</Text>
      </Container>
      {overview.isPending ? (
        <Container className="px-6 py-4">
          <Text className="text-ui-fg-subtle">Asking Dust…</Text>
        </Container>
      ) : overview.isError ? (
        <Container className="px-6 py-4">
          <ErrorNote error={overview.error} retry={() => overview.refetch()} testId="dust-overview-error" />
        </Container>
      ) : (
        <>
          <Reconciliation data={overview.data} />
          <Owed data={overview.data} />
          <Attention data={overview.data} />
        </>
      )}
    </div>
  )
}

function Reconciliation({ data }: { data: DustOverview }) {
  const run = data.reconciliation
  return (
    <Container className="px-6 py-4" data-testid="dust-reconciliation">
      <Heading level="h2">Reconciliation</Heading>
      {!run ? (
        <Text className="text-ui-fg-subtle">No reconciliation has run yet (Dust's scheduler runs one daily; `dust reconcile` runs one now).</Text>
      ) : (
        <div className="mt-2 flex flex-col gap-y-1">
          <div className="flex items-center gap-x-2">
            <StatusBadge color={run.ok ? "green" : "red"} data-testid="dust-reconciliation-status">
              {run.ok ? "Consistent" : `${run.discrepancy_count} discrepanc${run.discrepancy_count === 1 ? "y" : "ies"}`}
            </StatusBadge>
            <Text size="small" className="text-ui-fg-subtle">
              run {run.id} as of {formatTime(run.as_of)}
              {run.finished_at ? "" : " (still running)"}
              {run.actor ? ` by ${run.actor}` : ""}
            </Text>
          </div>
          {!run.ok && run.discrepancies.length ? (
            <ul className="list-disc pl-6">
              {run.discrepancies.slice(0, 10).map((d, i) => (
                <li key={i}>
                  <Text size="small">{describeDiscrepancy(d)}</Text>
                </li>
              ))}
            </ul>
          ) : null}
        </div>
      )}
    </Container>
  )
}

function describeDiscrepancy(d: Record<string, unknown>): string {
  const parts = [String(d.check ?? "check")]
  if (d.event_id) parts.push(`event ${d.event_id}`)
  if (d.account_id) parts.push(`account ${d.account_id}`)
  if (d.reason) parts.push(String(d.reason))
  else if (d.expected !== undefined) parts.push(`expected ${d.expected}, found ${d.actual}`)
  return parts.join(": ")
}

function Owed({ data }: { data: DustOverview }) {
  const { dust, currencies } = data.owed
  return (
    <Container className="px-6 py-4" data-testid="dust-owed">
      <Heading level="h2">What the store owes</Heading>
      <Text className="mt-1" data-testid="dust-owed-dust">
        {formatDust(dust.outstanding)} dust outstanding in {plural(dust.accounts, "account")}
        {dust.pending ? ` (${formatDust(dust.pending)} still pending)` : ""}
        {dust.held ? `, ${formatDust(dust.held)} held by carts` : ""}
      </Text>
      <Table className="mt-2">
        <Table.Header>
          <Table.Row>
            <Table.HeaderCell>Currency</Table.HeaderCell>
            <Table.HeaderCell>Store credit outstanding</Table.HeaderCell>
            <Table.HeaderCell>Dust outstanding, in money</Table.HeaderCell>
            <Table.HeaderCell>Redemption value</Table.HeaderCell>
          </Table.Row>
        </Table.Header>
        <Table.Body>
          {currencies.map((c) => (
            <Table.Row key={c.currency_code} data-testid={`dust-owed-${c.currency_code}`}>
              <Table.Cell>{c.currency_code.toUpperCase()}</Table.Cell>
              <Table.Cell>
                {formatMoney(c.store_credit.outstanding, c.currency_code)} ({plural(c.store_credit.accounts, "account")})
              </Table.Cell>
              <Table.Cell>{formatMoney(c.dust_value, c.currency_code)}</Table.Cell>
              <Table.Cell>
                1 dust = {c.redeem_value} minor unit{c.redeem_value === "1" ? "" : "s"}
              </Table.Cell>
            </Table.Row>
          ))}
        </Table.Body>
      </Table>
    </Container>
  )
}

function plural(count: number, noun: string): string {
  return `${formatDust(count)} ${noun}${count === 1 ? "" : "s"}`
}

function Attention({ data }: { data: DustOverview }) {
  const { needs_attention, failed } = data.event_counts
  return (
    <Container className="px-6 py-4" data-testid="dust-attention">
      <Heading level="h2">Events that need attention</Heading>
      <Text size="small" className="text-ui-fg-subtle">
        {needs_attention} need attention, {failed} failed. Resolving one closes it with your reason (kept); correct the ledger with a credit or debit on the customer if needed.
      </Text>
      {data.events.length === 0 ? (
        <Text className="mt-2" data-testid="dust-attention-none">
          Nothing needs attention.
        </Text>
      ) : (
        <div className="mt-2 flex flex-col gap-y-2">
          {data.events.map((event) => (
            <EventRow key={event.event_id} event={event} />
          ))}
        </div>
      )}
    </Container>
  )
}

function EventRow({ event }: { event: DustEvent }) {
  const client = useQueryClient()
  const [open, setOpen] = useState(false)
  const [reason, setReason] = useState("")
  const [formError, setFormError] = useState<string | null>(null)
  const resolve = useMutation({
    mutationFn: (text: string) => dustApi.resolve(event.event_id, text),
    onSuccess: () => client.invalidateQueries({ queryKey: ["dust", "overview"] }),
  })
  const submit = (e: React.FormEvent) => {
    e.preventDefault()
    const checked = reasonText(reason)
    if (!checked.ok) {
      return setFormError(checked.error)
    }
    setFormError(null)
    resolve.mutate(checked.value)
  }
  return (
    <div className="rounded-md border px-4 py-3" data-testid="dust-event" data-event-id={event.event_id}>
      <div className="flex items-center justify-between gap-x-2">
        <div className="flex items-center gap-x-2">
          <Badge size="2xsmall" color={event.status === "failed" ? "red" : "orange"}>
            {event.status === "failed" ? "failed" : "needs attention"}
          </Badge>
          <Text weight="plus">{event.name}</Text>
          <Text size="small" className="text-ui-fg-subtle">
            {event.event_id} · received {formatTime(event.received_at)}
          </Text>
        </div>
        {!open && !resolve.isSuccess ? (
          <Button size="small" variant="secondary" onClick={() => setOpen(true)}>
            Resolve…
          </Button>
        ) : null}
      </div>
      <Text size="small" className="mt-1">
        {event.reason ?? "(no reason recorded)"}
      </Text>
      {resolve.isSuccess ? (
        <Alert variant="success" className="mt-2">
          Resolved (was {resolve.data.previous}).
        </Alert>
      ) : open ? (
        <form className="mt-2 flex flex-col gap-y-2" onSubmit={submit} noValidate>
          <Label htmlFor={`resolve-${event.event_id}`}>Why is it closed? (kept)</Label>
          <Input id={`resolve-${event.event_id}`} value={reason} onChange={(e) => setReason(e.target.value)} />
          {formError ? <FormError message={formError} /> : null}
          {resolve.isError ? <ErrorNote error={resolve.error} testId="dust-resolve-error" write /> : null}
          <div className="flex justify-end gap-x-2">
            <Button size="small" variant="secondary" type="button" onClick={() => setOpen(false)}>
              Cancel
            </Button>
            <Button size="small" type="submit" isLoading={resolve.isPending}>
              Resolve event
            </Button>
          </div>
        </form>
      ) : null}
    </div>
  )
}

export const config = defineRouteConfig({ label: "Dust", icon: CurrencyDollar })

export default DustPage
