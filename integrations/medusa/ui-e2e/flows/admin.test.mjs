// The Dust plugin's admin in a real Chromium against a real Medusa and a real Dust worker:
// the customer widget credits dust, the product widget makes a product dust-only, the Dust
// page shows reconciliation and what is owed and resolves an event; each error a person can
// cause is on screen. The ledger is asserted through Dust's command line.
import assert from "node:assert/strict"
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { after, before, test } from "node:test"
import { MEDUSA, SEED, admin, adminLogin, browser, dust, dustBalance, registerCustomer, shot, waitFor, waitForEvent } from "./browser.mjs"

let b, page, customer
const reason = "Apology for a late delivery"

before(async () => {
  customer = await registerCustomer("ui")
  b = await browser()
  page = b.page
  await adminLogin(page)
})

after(async () => {
  if (b && b.errors.length) console.log(`page errors seen: ${b.errors.join("\n")}`)
  await b?.close()
})

const widget = () => page.getByTestId("dust-customer-widget")
const formError = () => widget().getByTestId("dust-form-error")

test("customer widget: refuses bad input, credits 250 dust, shows the entry", async () => {
  await page.goto(`${MEDUSA}/app/customers/${customer.id}`)
  await widget().waitFor()
  await assertText(widget().getByTestId("dust-available"), "0 dust")
  await assertText(widget().getByTestId("dust-store-credit-none"), "None")

  const amount = widget().getByLabel("Amount (whole dust)")
  const why = widget().getByLabel("Reason (kept with the entry)")
  const credit = widget().getByRole("button", { name: "Credit dust" })
  await credit.click()
  await assertText(formError(), "Amount is required.")
  await amount.fill("-5")
  await credit.click()
  await assertText(formError(), "Amount must be positive: -5 is negative.")
  await amount.fill("2.5")
  await credit.click()
  await assertText(formError(), "Amount must be a whole number: 2.5 has a fraction.")
  await amount.fill("250")
  await credit.click()
  await assertText(formError(), "A reason is required: it is kept with the entry.")
  await shot(page, "customer-widget-error", widget())
  assert.equal((await dustBalance(customer.id)).dust.balance, 0, "nothing posted for refused input")

  await why.fill(reason)
  await credit.click()
  const done = widget().getByTestId("dust-adjust-done")
  await done.waitFor()
  assert.match(await done.innerText(), /^Credited 250 dust \(entry \d+\)\. Balance now 250 dust, 250 available\.$/)
  await assertText(widget().getByTestId("dust-balance"), "250 dust")
  await assertText(widget().getByTestId("dust-available"), "250 dust")
  const row = widget().getByTestId("dust-entry").first()
  await waitFor("the entry in the widget", async () => (await row.innerText()).includes(reason), { timeoutMs: 30_000 })
  assert.match(await row.innerText(), /\+250 dust/)
  assert.match(await row.innerText(), /medusa-user:/)

  // The ledger, as Dust's command line sees it.
  const balance = await dustBalance(customer.id)
  assert.deepEqual(balance.dust, { balance: 250, held: 0, pending: 0, available: 250 })
  const [entry] = await dust("history", customer.id, "--limit", "1", "--json")
  assert.equal(entry.amount, 250)
  assert.equal(entry.direction, "credit")
  assert.equal(entry.memo, reason)
  assert.match(entry.actor, /^medusa-user:user_/)

  // A debit above the balance: Dust refuses, the widget says so.
  await widget().getByRole("combobox", { name: "Direction" }).click()
  await page.getByRole("option", { name: "Debit (take dust)" }).click()
  await amount.fill("1000")
  await why.fill("Testing a refusal")
  await widget().getByRole("button", { name: "Debit dust" }).click()
  await assertText(
    widget().getByTestId("dust-adjust-error"),
    "Dust refused: insufficient funds — only 250 available, 1000 requested."
  )
  assert.equal((await dustBalance(customer.id)).dust.balance, 250)
  await shot(page, "customer-widget-refused", widget())

  // Store credit (a refund, say) shows as money by the currency's digits.
  await admin("POST", "/admin/dust/credit", {
    body: { customer_id: customer.id, amount: 12935, reason: "Refund as store credit", kind: "store_credit", currency_code: "usd" },
  })
  await page.reload()
  await assertText(widget().getByTestId("dust-balance"), "250 dust")
  const storeCredit = widget().getByTestId("dust-store-credit")
  await storeCredit.waitFor()
  assert.match(await storeCredit.innerText(), /^\$129\.35\s+USD · available \$129\.35 · SC-/)
  await shot(page, "customer-widget", widget())
})

test("product widget: dust-only with a price, kept after a reload, recorded by Dust", async () => {
  const product = SEED.products.normal.id
  await page.goto(`${MEDUSA}/app/products/${product}`)
  const w = page.getByTestId("dust-product-widget")
  await w.waitFor()
  const price = w.getByLabel("Price in dust")
  const save = w.getByRole("button", { name: "Save dust settings" })
  await w.getByRole("switch").click()
  await price.fill("")
  await save.click()
  await assertText(w.getByTestId("dust-form-error"), "A dust-only product needs a dust price: a whole number of dust, at least 1.")
  await price.fill("12.5")
  await save.click()
  await assertText(w.getByTestId("dust-form-error"), "The dust price must be a whole number: 12.5 has a fraction.")
  await shot(page, "product-widget-error", w)
  await price.fill("750")
  await save.click()
  await w.getByTestId("dust-product-saved").waitFor()

  await page.reload()
  await w.waitFor()
  await assertText(w.getByText("Dust-only, 750 dust"), "Dust-only, 750 dust")
  assert.equal(await w.getByLabel("Price in dust").inputValue(), "750")
  assert.equal(await w.getByRole("switch").getAttribute("aria-checked"), "true")
  await shot(page, "product-widget", w)

  // Medusa's product.updated reached Dust.
  const recorded = await waitFor("Dust's settings of the product", async () => {
    const rows = await dust("products", "list", "--json")
    const row = rows.find((r) => r.product_id === product)
    return row && row.dust_only === true && row.dust_price === 750 ? row : null
  }, { timeoutMs: 60_000 })
  assert.equal(recorded.dust_price, 750)
})

test("Dust page: reconciliation, what is owed, resolving an event", async () => {
  // An event a person must look at: a refund above what its order was paid.
  const id = `ui-${Date.now().toString(36)}`
  const order = { id: `order_${id}`, customer_id: customer.id, currency_code: "usd", total: 1000 }
  await dust("publish", "order.placed", "--id", `evt_${id}_order`, "--data", JSON.stringify(order))
  await waitForEvent(`evt_${id}_order`, { statuses: ["processed", "ignored"] })
  const refundId = `evt_${id}_refund`
  const refund = { id: `refund_${id}`, order_id: order.id, amount: 1001, currency_code: "usd", to_store_credit: true }
  await dust("publish", "refund.created", "--id", refundId, "--data", JSON.stringify(refund))
  await waitForEvent(refundId, { statuses: ["needs_attention"] })
  const run = await dust("reconcile", "--json")
  assert.equal(run.ok, false)

  await page.goto(`${MEDUSA}/app/dust`)
  const status = page.getByTestId("dust-reconciliation-status")
  await status.waitFor()
  assert.match(await status.innerText(), /discrepanc/)
  assert.match(await page.getByTestId("dust-reconciliation").innerText(), new RegExp(`run ${run.reconciliation_id} `))

  // What is owed: every dust account's balance, and per currency its money value.
  const overview = await dustOwed()
  const owedDust = page.getByTestId("dust-owed-dust")
  assert.match(await owedDust.innerText(), new RegExp(`^${overview.dust.toLocaleString("en-US")} dust outstanding`))
  const usd = await page.getByTestId("dust-owed-usd").innerText()
  assert.match(usd, new RegExp(`\\$${(overview.dust / 100).toFixed(2).replace(/\B(?=(\d{3})+(?!\d))/g, ",")}`))

  const event = page.locator(`[data-event-id="${refundId}"]`)
  assert.match(await event.innerText(), /1001/)
  await shot(page, "dust-page")
  await event.getByRole("button", { name: "Resolve…" }).click()
  await event.getByRole("button", { name: "Resolve event" }).click()
  await assertText(event.getByTestId("dust-form-error"), "A reason is required: it is kept with the entry.")
  await event.getByLabel("Why is it closed? (kept)").fill("Refunded by bank transfer")
  await event.getByRole("button", { name: "Resolve event" }).click()
  await waitFor("the event to leave the page", async () => (await page.locator(`[data-event-id="${refundId}"]`).count()) === 0, {
    timeoutMs: 30_000,
  })
  const shown = await dust("events", "show", refundId, "--json")
  assert.equal(shown.status, "resolved")
  assert.equal(shown.resolution.reason, "Refunded by bank transfer")
  assert.match(shown.resolution.actor, /^medusa-user:/)
})

test("Dust not answering: the widget and the page say so", async () => {
  // Pause Dust's requests process (the one answering the admin routes), then resume it.
  const pid = Number(readFileSync(join(process.env.E2E_WORK, "dust-requests.pid"), "utf8"))
  process.kill(pid, "SIGSTOP")
  try {
    await page.goto(`${MEDUSA}/app/customers/${customer.id}`)
    const note = widget().getByTestId("dust-balance-error")
    await note.waitFor({ timeout: 60_000 })
    assert.match(await note.innerText(), /^Dust is not answering right now\. Try again in a minute/)
    await shot(page, "customer-widget-dust-down", widget())
    await page.goto(`${MEDUSA}/app/dust`)
    const pageNote = page.getByTestId("dust-overview-error")
    await pageNote.waitFor({ timeout: 60_000 })
    assert.match(await pageNote.innerText(), /Dust is not answering right now/)
  } finally {
    process.kill(pid, "SIGCONT")
  }
  // Back: the retry answers.
  await page.getByRole("button", { name: "Try again" }).click()
  await page.getByTestId("dust-reconciliation-status").waitFor({ timeout: 60_000 })
})

async function assertText(locator, text) {
  await locator.waitFor()
  await waitFor(`"${text}"`, async () => (await locator.innerText()).trim() === text, { timeoutMs: 30_000 }).catch(async (e) => {
    throw new Error(`${e.message}; shown: ${JSON.stringify(await locator.innerText())}`)
  })
}

/** Dust's own sums, to compare with the page: every dust account's balance. */
async function dustOwed() {
  const { execFile } = await import("node:child_process")
  const { promisify } = await import("node:util")
  const { stdout } = await promisify(execFile)("psql", [
    process.env.DUST_PG_URL,
    "-XAtq",
    "-c",
    "SELECT COALESCE(SUM(balance), 0) FROM dust_accounts WHERE kind = 'dust'",
  ])
  return { dust: Number(stdout.trim()) }
}
