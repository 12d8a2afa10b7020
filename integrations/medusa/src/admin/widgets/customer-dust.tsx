import { defineWidgetConfig } from "@medusajs/admin-sdk"
import type { AdminCustomer, DetailWidgetProps } from "@medusajs/framework/types"
import { Alert, Badge, Button, Container, Heading, Input, Label, Select, Table, Text, Textarea } from "@medusajs/ui"
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query"
import { useState } from "react"
import { ErrorNote, FormError } from "../components/error-note"
import { type DustAdjustment, type DustEntry, dustApi, errorMessage } from "../lib/api"
import { formatDust, formatMoney, formatTime } from "../lib/format"
import { reasonText, wholeAmount } from "../lib/validate"

export const PAGE_SIZE = 10

/** The customer's dust and store credit in Dust, their latest entries, and a credit/debit form. */
export function CustomerDustWidget({ data: customer }: DetailWidgetProps<AdminCustomer>) {
  return (
    <Container className="divide-y p-0" data-testid="dust-customer-widget">
      <div className="flex items-center justify-between px-6 py-4">
        <div>
          <Heading level="h2">Dust</Heading>
          <Text size="small" className="text-ui-fg-subtle">
            Loyalty points and store credit, as Dust's ledger keeps them
          </Text>
        </div>
      </div>
      <Balances customerId={customer.id} />
      <AdjustForm customerId={customer.id} />
      <History customerId={customer.id} />
    </Container>
  )
}

function Balances({ customerId }: { customerId: string }) {
  const balance = useQuery({
    queryKey: ["dust", "balance", customerId],
    queryFn: () => dustApi.balance(customerId),
    retry: false,
  })
  if (balance.isPending) {
    return <Text className="px-6 py-4 text-ui-fg-subtle">Loading the balance from Dust…</Text>
  }
  if (balance.isError) {
    return (
      <div className="px-6 py-4">
        <ErrorNote error={balance.error} retry={() => balance.refetch()} testId="dust-balance-error" />
      </div>
    )
  }
  const { dust, store_credit } = balance.data
  return (
    <div className="px-6 py-4" data-testid="dust-balances">
      <div className="grid grid-cols-4 gap-4">
        {(["balance", "held", "pending", "available"] as const).map((name) => (
          <div key={name}>
            <Text size="small" className="capitalize text-ui-fg-subtle">
              {name}
            </Text>
            <Text size="large" weight="plus" data-testid={`dust-${name}`}>
              {formatDust(dust[name])} dust
            </Text>
          </div>
        ))}
      </div>
      <div className="mt-4">
        <Text size="small" className="text-ui-fg-subtle">
          Store credit
        </Text>
        {store_credit.length === 0 ? (
          <Text data-testid="dust-store-credit-none">None</Text>
        ) : (
          <ul data-testid="dust-store-credit">
            {store_credit.map((sc) => (
              <li key={sc.currency_code} className="flex gap-x-3">
                <Text weight="plus">{formatMoney(sc.balance, sc.currency_code)}</Text>
                <Text className="text-ui-fg-subtle">
                  {sc.currency_code.toUpperCase()} · available {formatMoney(sc.available, sc.currency_code)}
                  {sc.held ? ` · held ${formatMoney(sc.held, sc.currency_code)}` : ""}
                  {sc.code ? ` · ${sc.code}` : ""}
                </Text>
              </li>
            ))}
          </ul>
        )}
      </div>
    </div>
  )
}

function AdjustForm({ customerId }: { customerId: string }) {
  const client = useQueryClient()
  const [direction, setDirection] = useState<"credit" | "debit">("credit")
  const [amount, setAmount] = useState("")
  const [reason, setReason] = useState("")
  const [formError, setFormError] = useState<string | null>(null)
  // One key per intended adjustment: a retry after a timeout posts once.
  const [key, setKey] = useState(() => newKey())
  const adjust = useMutation({
    mutationFn: (body: { amount: number; reason: string }) =>
      dustApi.adjust(direction, { customer_id: customerId, kind: "dust", idempotency_key: key, ...body }),
    onSuccess: () => {
      setAmount("")
      setReason("")
      setKey(newKey())
      client.invalidateQueries({ queryKey: ["dust"] })
    },
  })
  const submit = (e: React.FormEvent) => {
    e.preventDefault()
    const checkedAmount = wholeAmount(amount, "Amount")
    if (!checkedAmount.ok) {
      return setFormError(checkedAmount.error)
    }
    const checkedReason = reasonText(reason)
    if (!checkedReason.ok) {
      return setFormError(checkedReason.error)
    }
    setFormError(null)
    adjust.mutate({ amount: checkedAmount.value, reason: checkedReason.value })
  }
  return (
    <form className="flex flex-col gap-y-3 px-6 py-4" onSubmit={submit} noValidate data-testid="dust-adjust-form">
      <Heading level="h3">Credit or debit dust</Heading>
      <div className="grid grid-cols-2 gap-4">
        <div className="flex flex-col gap-y-1">
          <Label htmlFor="dust-direction">Direction</Label>
          <Select value={direction} onValueChange={(v) => setDirection(v as "credit" | "debit")}>
            <Select.Trigger id="dust-direction" aria-label="Direction">
              <Select.Value />
            </Select.Trigger>
            <Select.Content>
              <Select.Item value="credit">Credit (add dust)</Select.Item>
              <Select.Item value="debit">Debit (take dust)</Select.Item>
            </Select.Content>
          </Select>
        </div>
        <div className="flex flex-col gap-y-1">
          <Label htmlFor="dust-amount">Amount (whole dust)</Label>
          <Input
            id="dust-amount"
            inputMode="numeric"
            placeholder="250"
            value={amount}
            onChange={(e) => setAmount(e.target.value)}
          />
        </div>
      </div>
      <div className="flex flex-col gap-y-1">
        <Label htmlFor="dust-reason">Reason (kept with the entry)</Label>
        <Textarea id="dust-reason" value={reason} onChange={(e) => setReason(e.target.value)} />
      </div>
      {formError ? <FormError message={formError} /> : null}
      {adjust.isError ? <ErrorNote error={adjust.error} testId="dust-adjust-error" write /> : null}
      {adjust.isSuccess ? <Posted reply={adjust.data} /> : null}
      <div className="flex justify-end">
        <Button type="submit" isLoading={adjust.isPending}>
          {direction === "credit" ? "Credit dust" : "Debit dust"}
        </Button>
      </div>
    </form>
  )
}

function Posted({ reply }: { reply: DustAdjustment }) {
  const { entry } = reply
  const verb = entry.direction === "credit" ? "Credited" : "Debited"
  const available = (reply.account as { available?: number }).available
  return (
    <Alert variant="success" data-testid="dust-adjust-done">
      {verb} {formatDust(entry.amount)} dust (entry {entry.id}
      {reply.repeat ? ", already posted" : ""}). Balance now {formatDust(entry.balance_after)} dust
      {available !== undefined ? `, ${formatDust(available)} available` : ""}.
    </Alert>
  )
}

function History({ customerId }: { customerId: string }) {
  const [kind, setKind] = useState<"dust" | "store_credit">("dust")
  // The cursors of the pages before this one: "Newer" pops, "Older" pushes.
  const [cursors, setCursors] = useState<(string | null)[]>([null])
  const cursor = cursors[cursors.length - 1]
  const history = useQuery({
    queryKey: ["dust", "history", customerId, kind, cursor],
    queryFn: () => dustApi.history(customerId, kind, PAGE_SIZE, cursor),
    retry: false,
  })
  return (
    <div className="flex flex-col gap-y-3 px-6 py-4" data-testid="dust-history">
      <div className="flex items-center justify-between">
        <Heading level="h3">Latest entries</Heading>
        <Select
          size="small"
          value={kind}
          onValueChange={(v) => {
            setKind(v as "dust" | "store_credit")
            setCursors([null])
          }}
        >
          <Select.Trigger aria-label="Entries of" className="w-40">
            <Select.Value />
          </Select.Trigger>
          <Select.Content>
            <Select.Item value="dust">Dust</Select.Item>
            <Select.Item value="store_credit">Store credit</Select.Item>
          </Select.Content>
        </Select>
      </div>
      {history.isPending ? (
        <Text className="text-ui-fg-subtle">Loading entries…</Text>
      ) : history.isError ? (
        <ErrorNote error={history.error} retry={() => history.refetch()} testId="dust-history-error" />
      ) : history.data.entries.length === 0 ? (
        <Text className="text-ui-fg-subtle" data-testid="dust-history-empty">
          No entries yet.
        </Text>
      ) : (
        <Table>
          <Table.Header>
            <Table.Row>
              <Table.HeaderCell>When</Table.HeaderCell>
              <Table.HeaderCell>Kind</Table.HeaderCell>
              <Table.HeaderCell>Amount</Table.HeaderCell>
              <Table.HeaderCell>Reason</Table.HeaderCell>
              <Table.HeaderCell>Actor</Table.HeaderCell>
              <Table.HeaderCell>Source event</Table.HeaderCell>
            </Table.Row>
          </Table.Header>
          <Table.Body>
            {history.data.entries.map((entry) => (
              <EntryRow key={entry.id} entry={entry} />
            ))}
          </Table.Body>
        </Table>
      )}
      <div className="flex justify-end gap-x-2">
        <Button
          size="small"
          variant="secondary"
          disabled={cursors.length <= 1}
          onClick={() => setCursors((c) => c.slice(0, -1))}
        >
          Newer
        </Button>
        <Button
          size="small"
          variant="secondary"
          disabled={!history.data?.next}
          onClick={() => history.data?.next && setCursors((c) => [...c, history.data!.next])}
        >
          Older
        </Button>
      </div>
    </div>
  )
}

export function entryAmount(entry: DustEntry): string {
  const sign = entry.direction === "credit" ? "+" : "−"
  return entry.kind === "dust"
    ? `${sign}${formatDust(entry.amount)} dust`
    : `${sign}${formatMoney(entry.amount, entry.currency_code ?? "usd")}`
}

function EntryRow({ entry }: { entry: DustEntry }) {
  const source = entry.event_id ?? (entry.reference_type ? `${entry.reference_type}:${entry.reference_id ?? ""}` : "—")
  return (
    <Table.Row data-testid="dust-entry">
      <Table.Cell className="whitespace-nowrap">{formatTime(entry.created_at)}</Table.Cell>
      <Table.Cell>
        <Badge size="2xsmall">{entry.kind === "dust" ? "dust" : `store credit ${entry.currency_code?.toUpperCase()}`}</Badge>
      </Table.Cell>
      <Table.Cell className="whitespace-nowrap">{entryAmount(entry)}</Table.Cell>
      <Table.Cell className="max-w-[160px] truncate" title={entry.memo ?? entry.reason}>
        {entry.memo ? `${entry.memo} (${entry.reason})` : entry.reason}
      </Table.Cell>
      <Table.Cell className="max-w-[110px] truncate" title={entry.actor ?? ""}>
        {entry.actor ?? "—"}
      </Table.Cell>
      <Table.Cell className="max-w-[110px] truncate" title={source}>
        {source}
      </Table.Cell>
    </Table.Row>
  )
}

function newKey(): string {
  return `admin-widget:${Date.now().toString(36)}:${Math.random().toString(36).slice(2, 10)}`
}

export { errorMessage }

export const config = defineWidgetConfig({ zone: "customer.details.after" })

export default CustomerDustWidget
