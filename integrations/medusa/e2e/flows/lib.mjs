// What the flows share: HTTP calls to Medusa's store and admin APIs, Dust's command line,
// waiting for the worker, and the contract's earn formula in exact integer arithmetic.
import { execFile } from "node:child_process"
import { appendFileSync, existsSync, readFileSync } from "node:fs"
import { join } from "node:path"
import http from "node:http"
import { randomUUID } from "node:crypto"
import { promisify } from "node:util"

const run = promisify(execFile)

export const MEDUSA_URL = process.env.MEDUSA_URL || "http://127.0.0.1:9000"
export const DUST_CLI = process.env.DUST_CLI || "dust"
export const ADMIN_EMAIL = process.env.MEDUSA_ADMIN_EMAIL || "admin@dust.test"
export const ADMIN_PASSWORD = process.env.MEDUSA_ADMIN_PASSWORD || "dust-e2e-admin"
export const SEED = JSON.parse(readFileSync(process.env.E2E_SEED_OUT, "utf8"))
// The worker's earn rate, as a fraction num/den (decimal string in DUST_EARN_RATE).
export const EARN_RATE = process.env.DUST_EARN_RATE || "0.01"
export const TAX_RATE = "0.08875"

// One request per connection (agent: false): Medusa closes idle keep-alive connections after
// 5 s, and a pooled connection reused just then fails the request ("fetch failed").
export function request(method, path, { body, token, key, headers = {} } = {}) {
  const url = new URL(path, MEDUSA_URL)
  const payload = body === undefined ? undefined : JSON.stringify(body)
  const h = { accept: "application/json", ...headers }
  if (payload !== undefined) h["content-type"] = "application/json"
  if (token) h.authorization = `Bearer ${token}`
  if (key) h["x-publishable-api-key"] = key
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers: h, agent: false, timeout: 60_000 }, (res) => {
      const chunks = []
      res.on("data", (c) => chunks.push(c))
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8")
        let json
        try {
          json = text ? JSON.parse(text) : undefined
        } catch {
          json = undefined
        }
        resolve({ status: res.statusCode, body: json, text })
      })
    })
    req.on("timeout", () => req.destroy(new Error(`${method} ${path}: no answer in 60 s`)))
    req.on("error", reject)
    if (payload !== undefined) req.write(payload)
    req.end()
  })
}

// A call that must succeed: anything but 2xx throws with Medusa's answer.
export async function call(method, path, opts = {}) {
  const res = await request(method, path, opts)
  if (res.status < 200 || res.status >= 300) {
    throw new Error(`${method} ${path} -> ${res.status}: ${res.text.slice(0, 800)}`)
  }
  return res.body
}

export const store = (method, path, opts = {}) => call(method, path, { key: SEED.publishable_key, ...opts })

let adminToken
export async function admin(method, path, opts = {}) {
  if (!adminToken) {
    const { token } = await call("POST", "/auth/user/emailpass", {
      body: { email: ADMIN_EMAIL, password: ADMIN_PASSWORD },
    })
    adminToken = token
  }
  return call(method, path, { token: adminToken, ...opts })
}

// A customer with an account: registered through Medusa's auth, then signed in.
export async function registerCustomer(label = "c") {
  const email = `${label}-${randomUUID().slice(0, 8)}@dust.test`
  const password = "dust-e2e-pass"
  const { token: regToken } = await call("POST", "/auth/customer/emailpass/register", {
    body: { email, password },
  })
  const { customer } = await store("POST", "/store/customers", {
    token: regToken,
    body: { email, first_name: "Dust", last_name: label },
  })
  const { token } = await call("POST", "/auth/customer/emailpass", { body: { email, password } })
  return { id: customer.id, email, token }
}

const ADDRESS = {
  usd: { first_name: "Dust", last_name: "Test", address_1: "1 Main St", city: "New York", province: "ny", postal_code: "10001", country_code: "us" },
  jpy: { first_name: "Dust", last_name: "Test", address_1: "1-1 Chiyoda", city: "Tokyo", postal_code: "100-0001", country_code: "jp" },
}

// A cart up to payment: region, items, addresses, shipping, a system-provider payment session.
// `customer` null is a guest (publishable key and an email only).
export async function prepareCart({ customer, currency = "usd", items }) {
  const token = customer?.token
  const email = customer?.email || `guest-${randomUUID().slice(0, 8)}@dust.test`
  const { cart } = await store("POST", "/store/carts", {
    token,
    body: { region_id: SEED.regions[currency], sales_channel_id: SEED.sales_channel_id, email },
  })
  for (const { variant_id, quantity } of items) {
    await store("POST", `/store/carts/${cart.id}/line-items`, { token, body: { variant_id, quantity } })
  }
  await store("POST", `/store/carts/${cart.id}`, {
    token,
    body: { shipping_address: ADDRESS[currency], billing_address: ADDRESS[currency] },
  })
  await store("POST", `/store/carts/${cart.id}/shipping-methods`, {
    token,
    body: { option_id: SEED.shipping_option_id },
  })
  return cart.id
}

export async function completeCart(cartId, customer) {
  const token = customer?.token
  const { payment_collection } = await store("POST", "/store/payment-collections", {
    token,
    body: { cart_id: cartId },
  })
  await store("POST", `/store/payment-collections/${payment_collection.id}/payment-sessions`, {
    token,
    body: { provider_id: "pp_system_default" },
  })
  const done = await store("POST", `/store/carts/${cartId}/complete`, { token })
  if (done.type !== "order") throw new Error(`cart ${cartId} did not complete: ${JSON.stringify(done)}`)
  return done.order
}

export async function checkout({ customer, currency = "usd", items }) {
  const cartId = await prepareCart({ customer, currency, items })
  return completeCart(cartId, customer)
}

export async function getCart(cartId, customer) {
  const { cart } = await store("GET", `/store/carts/${cartId}`, { token: customer?.token })
  return cart
}

export async function adminOrder(orderId, fields = "") {
  const q = fields ? `?fields=${encodeURIComponent(fields)}` : ""
  const { order } = await admin("GET", `/admin/orders/${orderId}${q}`)
  return order
}

// Dust's command line, as an operator runs it (same database as the worker).
export async function dust(...args) {
  const { stdout } = await run(DUST_CLI, args, { env: process.env, maxBuffer: 16 << 20 }).catch((e) => {
    // `dust reconcile` exits 1 when the ledger is not clean: its JSON is still the answer.
    if (e.stdout && args.includes("--json")) return e
    throw e
  })
  return args.includes("--json") ? JSON.parse(stdout) : stdout
}

export const dustBalance = (customerId) => dust("balance", customerId, "--json")

// The inbox row Dust wrote for an envelope (status, envelope), read straight from Dust's
// database with psql: the flows poll it often, and a Python CLI start per poll is slow.
export async function dustEvent(eventId) {
  const literal = `'${String(eventId).replaceAll("'", "''")}'`
  const sql = `SELECT json_build_object('event_id', event_id, 'status', status, 'reason', reason,
                 'envelope', CASE WHEN left(envelope, 1) = '{' THEN envelope::json END)
               FROM dust_events WHERE event_id = ${literal}`
  const { stdout } = await run("psql", [process.env.DUST_PG_URL, "-XAtq", "-c", sql])
  return stdout.trim() ? JSON.parse(stdout) : null
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// Polls until check() returns a truthy value; throws with the last value seen.
// The default wait is long: on a loaded machine a Medusa request alone has taken 30 s.
export async function waitFor(what, check, { timeoutMs = 180_000, everyMs = 500 } = {}) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    try {
      last = await check()
      if (last) return last
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`)
    }
    await sleep(everyMs)
  }
}

// Waits until Dust recorded the envelope and returns its record; fails on a status that
// means the work was not done.
export async function waitForEvent(eventId, { statuses = ["processed"], timeoutMs } = {}) {
  return waitFor(`Dust event ${eventId}`, async () => {
    const ev = await dustEvent(eventId)
    if (!ev) return null
    if (statuses.includes(ev.status)) return ev
    if (["failed", "rejected", "needs_attention", "conflict"].includes(ev.status)) {
      throw Object.assign(new Error(`Dust event ${eventId} is ${ev.status}: ${JSON.stringify(ev)}`), { fatal: true })
    }
    return null
  }, { timeoutMs })
}

// ---- exact decimal arithmetic (BigInt scaled by 10^digits) -------------------------------

function parseDecimal(s) {
  const str = String(s)
  if (!/^-?\d+(\.\d+)?$/.test(str)) throw new Error(`not a decimal: ${str}`)
  const neg = str.startsWith("-")
  const [i, f = ""] = str.replace("-", "").split(".")
  const v = BigInt(i + f)
  return { v: neg ? -v : v, scale: f.length }
}

function formatDecimal(v, scale) {
  const neg = v < 0n
  let digits = (neg ? -v : v).toString().padStart(scale + 1, "0")
  const out = scale ? `${digits.slice(0, -scale)}.${digits.slice(-scale)}` : digits
  return (neg ? "-" : "") + out
}

// Exact sums and products of decimal strings ("25.99" x "3" = "77.97").
export function dadd(...xs) {
  const ps = xs.map(parseDecimal)
  const scale = Math.max(...ps.map((p) => p.scale))
  const v = ps.reduce((acc, p) => acc + p.v * 10n ** BigInt(scale - p.scale), 0n)
  return formatDecimal(v, scale)
}

export function dmul(a, b) {
  const x = parseDecimal(a)
  const y = parseDecimal(b)
  return formatDecimal(x.v * y.v, x.scale + y.scale)
}

// round half up of a decimal string (major units) to integer minor units
export function toMinor(amount, digits) {
  const { v, scale } = parseDecimal(amount)
  if (scale <= digits) return Number(v * 10n ** BigInt(digits - scale))
  const div = 10n ** BigInt(scale - digits)
  const q = v / div
  const r = v % div
  return Number(2n * r >= div ? q + 1n : q)
}

// floor(minor * rate) for a decimal-string rate
export function floorTimes(minor, rate) {
  const { v, scale } = parseDecimal(rate)
  const p = BigInt(minor) * v
  const d = 10n ** BigInt(scale)
  return Number(p >= 0n ? p / d : -((-p + d - 1n) / d))
}

export const earned = (base) => floorTimes(Math.max(0, base), EARN_RATE)

// Reconciliation must be clean after every flow.
export async function assertReconciled(assert) {
  const rec = await dust("reconcile", "--json")
  assert.equal(rec.ok, true, `dust reconcile: ${JSON.stringify(rec.discrepancies)}`)
  return rec
}

// ---- the store's prices (src/scripts/seed.ts) and the money the contract derives from them ---

export const PRICES = {
  usd: { normal: "25.99", dust_only: "5", gift_card: "20", shipping: "5", tax: "0.08875", digits: 2 },
  jpy: { normal: "2999", dust_only: "500", gift_card: "2000", shipping: "500", tax: "0", digits: 0 },
}
export const DUST_ONLY_PRICE = 500 // the dust-only product's metadata.dust_price

// What Medusa charges for `lines` ([{product: "normal", quantity: 3}]) with one shipping method:
// the item totals net of tax (minor units), and the order's totals at full precision and rounded
// half-up, as the contract says the plugin sends them.
export function expectedOrder(currency, lines) {
  const p = PRICES[currency]
  const items = lines.map(({ product, quantity }) => ({
    product,
    quantity,
    net: dmul(p[product], String(quantity)),
  }))
  // Medusa taxes the goods and the shipping, not gift cards.
  const taxed = dadd(...items.filter((i) => i.product !== "gift_card").map((i) => i.net), p.shipping)
  const tax = dmul(taxed, p.tax)
  const total = dadd(...items.map((i) => i.net), p.shipping, tax)
  return {
    items: items.map((i) => ({ ...i, total: toMinor(i.net, p.digits) })),
    shipping_total: toMinor(p.shipping, p.digits),
    tax_total: toMinor(tax, p.digits),
    total: toMinor(total, p.digits),
    raw: { total, tax_total: tax },
  }
}

// The contract's earn formula (rate from DUST_EARN_RATE, redeem value 1 minor unit per dust).
export function expectedEarn(order, { dust_total = 0, store_credit_total = 0, gift_card_total = 0, refunded = 0 } = {}) {
  const eligibleItems = order.items.filter((i) => i.product === "normal")
  const dustOnlyItems = order.items.filter((i) => i.product === "dust_only")
  const sum = (xs) => xs.reduce((a, i) => a + i.total, 0)
  const cap = order.total - order.shipping_total - order.tax_total
  const eligible = Math.min(sum(eligibleItems), cap)
  const dustForEligible = Math.max(0, dust_total * 1 - sum(dustOnlyItems))
  const base = Math.max(0, eligible - store_credit_total - gift_card_total - dustForEligible - refunded)
  return earned(base)
}

// Flows record the Medusa events they caused and the balances they ended with; the
// redelivery flow emits those events again and checks that nothing moved.
export function recordForRedelivery(entry) {
  appendFileSync(join(process.env.E2E_WORK, "redeliver.jsonl"), JSON.stringify(entry) + "\n")
}

export function readRedelivery() {
  const f = join(process.env.E2E_WORK, "redeliver.jsonl")
  if (!existsSync(f)) return []
  return readFileSync(f, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l))
}

// Medusa's own record of the events it emitted (src/subscribers/record-events.ts).
export function medusaEvents(filter = () => true) {
  const f = join(process.env.E2E_WORK, "medusa-events.jsonl")
  if (!existsSync(f)) return []
  return readFileSync(f, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l)).filter(filter)
}

// How many times the plugin logged publishing an envelope (its "dust: published <id>" line).
export function publishedCount(envelopeId) {
  const f = join(process.env.E2E_WORK, "medusa.log")
  if (!existsSync(f)) return 0
  const needle = `dust: published ${envelopeId}`
  return readFileSync(f, "utf8").split("\n").filter((l) => l.includes(needle) && l.trimEnd().endsWith(envelopeId)).length
}

// The store with other environment (e.g. DUST_SKIP_EVENTS), stopped and started by pid.
export async function restartMedusa(extraEnv = {}) {
  const here = new URL("..", import.meta.url).pathname
  await run(join(here, "stop-medusa.sh"), [], { env: process.env })
  await run(join(here, "start-medusa.sh"), [], { env: { ...process.env, ...extraEnv } })
}

// Emits Medusa events again through the store's event bus (src/scripts/emit.ts).
export async function emitAgain(events) {
  const here = new URL("..", import.meta.url).pathname
  await run("node", ["node_modules/@medusajs/cli/cli.js", "exec", "./src/scripts/emit.ts", JSON.stringify(events)], {
    cwd: here,
    env: { ...process.env, MEDUSA_WORKER_MODE: "server" },
    maxBuffer: 16 << 20,
  })
}

// Money captured, then part of it refunded with a refund reason, through the admin API.
let refundReasonId
export async function captureAndRefund(orderId, amount) {
  const order = await adminOrder(orderId, "*payment_collections,*payment_collections.payments")
  const payment = order.payment_collections[0].payments[0]
  await admin("POST", `/admin/payments/${payment.id}/capture`, { body: {} })
  if (amount === undefined) return { payment_id: payment.id }
  if (!refundReasonId) {
    const { refund_reason } = await admin("POST", "/admin/refund-reasons", {
      body: { label: "Dust e2e", code: `dust_e2e_${randomUUID().slice(0, 8)}` },
    })
    refundReasonId = refund_reason.id
  }
  const { payment: after } = await admin("POST", `/admin/payments/${payment.id}/refund`, {
    body: { amount, refund_reason_id: refundReasonId },
  })
  const { payment: withRefunds } = await admin("GET", `/admin/payments/${payment.id}?fields=*refunds`)
  const refunds = withRefunds.refunds || after.refunds || []
  return { payment_id: payment.id, refund_id: refunds[refunds.length - 1].id }
}

export const VARIANT = Object.fromEntries(Object.entries(SEED.products || {}).map(([k, v]) => [k, v.variant_id]))

// One order's money as Dust recorded it must be the contract's mapping of what Medusa charged.
export function assertOrderPayload(assert, data, want, extra = {}) {
  assert.equal(data.currency_code, extra.currency_code || "usd")
  assert.equal(data.total, want.total, "total (before dust, store credit and gift cards)")
  assert.equal(data.tax_total, want.tax_total, "tax_total rounded half-up")
  assert.equal(data.shipping_total, want.shipping_total, "shipping_total")
  assert.equal(data.dust_total ?? 0, extra.dust_total ?? 0, "dust_total")
  assert.equal(data.store_credit_total ?? 0, extra.store_credit_total ?? 0, "store_credit_total")
  const got = [...data.items].map((i) => [i.product_id, i.quantity, i.total]).sort()
  const expected = want.items.map((i) => [SEED.products[i.product].id, i.quantity, i.total]).sort()
  assert.deepEqual(got, expected, "items: product, quantity, total net of tax")
}

export async function snapshot(customerId) {
  const [balance, history] = await Promise.all([dustBalance(customerId), dust("history", customerId, "--json")])
  return { balance, entries: Array.isArray(history) ? history.length : history.entries?.length }
}

// A first order that earns: shirt x3 in the taxed region. Returns the dust it earned.
export async function earnFirst(customer) {
  const order = await checkout({ customer, items: [{ variant_id: VARIANT.normal, quantity: 3 }] })
  await waitForEvent(`order.placed:${order.id}`)
  return { order, earned: expectedEarn(expectedOrder("usd", [{ product: "normal", quantity: 3 }])) }
}

// No event waits on Dust's queue and none is being handled (kombu's unacked hash holds
// [message, exchange, routing key] for each message a worker took and has not acknowledged).
export async function redisQueueIdle() {
  const url = process.env.DUST_BROKER_URL
  const q = await run("redis-cli", ["-u", url, "llen", "dust.events"])
  const u = await run("redis-cli", ["-u", url, "--no-raw", "hvals", "unacked"])
  const inFlight = u.stdout.includes('dust.events')
  return Number(q.stdout.trim()) === 0 && !inFlight
}
