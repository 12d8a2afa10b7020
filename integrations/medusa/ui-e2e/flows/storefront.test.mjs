// The storefront example (examples/storefront) in Chromium against the running Medusa, plugin
// and Dust worker: a customer the store credited signs in, sees the dust and its history, sees
// the dust-only product priced in dust, applies dust at checkout and sees it on the cart,
// places the order and sees the spend in the history; with Dust's request worker paused the
// page says Dust is not answering (the route's 503) and recovers. The ledger is asserted
// through `dust balance --json`. Builds the example with this run's Medusa URL and
// publishable key and serves it with `vite preview` on $DUST_UI_STOREFRONT_PORT (Medusa's
// store and auth CORS allow that origin).
import assert from "node:assert/strict"
import { execFile, spawn } from "node:child_process"
import { existsSync, openSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { randomUUID } from "node:crypto"
import { after, before, test } from "node:test"
import { promisify } from "node:util"
import * as B from "./browser.mjs"

const run = promisify(execFile)
const EXAMPLE = new URL("../../examples/storefront/", import.meta.url).pathname
const PORT = Number(process.env.DUST_UI_STOREFRONT_PORT || 9001)
const STOREFRONT = `http://127.0.0.1:${PORT}`
const WORK = process.env.E2E_WORK || B.ARTIFACTS
const CREDIT = 1000
const PRICE = B.DUST_ONLY_PRICE // the dust-only product's metadata.dust_price (500)

let preview
let session

async function sh(cmd, args, opts = {}) {
  const started = Date.now()
  // The run's NODE_ENV is production (Medusa's admin): npm ci would skip the devDependencies
  // and Vitest would load React's production build, which has no act().
  const env = { ...process.env, NODE_ENV: "development", ...opts.env }
  const res = await run(cmd, args, { cwd: EXAMPLE, maxBuffer: 1 << 26, ...opts, env }).catch((e) => {
    throw new Error(`${cmd} ${args.join(" ")} failed:\n${e.stdout ?? ""}\n${e.stderr ?? ""}`)
  })
  console.log(`${cmd} ${args.join(" ")}: ${((Date.now() - started) / 1000).toFixed(1)} s`)
  return res
}

before(async () => {
  // The example's own install, unit tests (Vitest, components with fetch mocked) and build.
  const reuse = process.env.DUST_MEDUSA_E2E_REUSE_INSTALL === "1" && process.env.CI !== "true"
  if (!reuse || !existsSync(join(EXAMPLE, "node_modules"))) {
    await sh("npm", ["ci", "--no-audit", "--no-fund", "--loglevel=error"])
  }
  await sh("npm", ["test"])
  await sh("node", ["node_modules/vite/bin/vite.js", "build", "--logLevel", "warn"], {
    env: { NODE_ENV: "production", VITE_MEDUSA_URL: B.MEDUSA, VITE_MEDUSA_PUBLISHABLE_KEY: B.SEED.publishable_key, VITE_MEDUSA_REGION_ID: B.SEED.regions.usd },
  })
  // vite preview's own node process (not npx), stopped by pid in after().
  const log = openSync(join(WORK, "storefront.log"), "a")
  preview = spawn(
    process.execPath,
    ["node_modules/vite/bin/vite.js", "preview", "--host", "127.0.0.1", "--port", String(PORT), "--strictPort"],
    { cwd: EXAMPLE, stdio: ["ignore", log, log] }
  )
  await B.waitFor(`the storefront on ${STOREFRONT}`, async () => (await fetch(STOREFRONT)).ok, { timeoutMs: 60_000 })
})

after(async () => {
  await session?.close()
  if (preview && preview.exitCode === null) {
    preview.kill("SIGTERM")
    await new Promise((r) => preview.once("exit", r))
  }
})

// Dust's `requests` worker (run.sh's Procfile process): SIGSTOP makes Dust stop answering the
// plugin's requests without losing anything; SIGCONT brings it back (requests that expired
// meanwhile are dropped by Dust, the plugin already answered 503).
function requestsWorker(signal) {
  const pid = Number(readFileSync(join(process.env.E2E_WORK, "dust-requests.pid"), "utf8"))
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number)
  for (const p of [pid, ...children]) process.kill(p, signal)
}

test("the storefront example: sign in, dust-only product in dust, pay with dust, history", async () => {
  // A customer with an account and a password, credited by the store.
  const email = `ada-${randomUUID().slice(0, 8)}@dust.test`
  const password = "storefront-pass-1"
  const { token: regToken } = await B.call("POST", "/auth/customer/emailpass/register", { body: { email, password } })
  const { customer } = await B.store("POST", "/store/customers", {
    token: regToken,
    body: { email, first_name: "Ada", last_name: "Lovelace" },
  })
  await B.admin("POST", "/admin/dust/credit", {
    body: { customer_id: customer.id, amount: CREDIT, reason: "Welcome to the shop" },
  })
  assert.equal((await B.dust("balance", customer.id, "--json")).dust.balance, CREDIT)

  session = await B.browser({ width: 1280, height: 1000 })
  const { page, errors } = session

  // Sign in: a wrong password is a readable refusal, then the right one.
  await page.goto(STOREFRONT)
  await page.getByLabel("Email").fill(email)
  await page.getByLabel("Password").fill("not-the-password")
  await page.getByRole("button", { name: "Sign in" }).click()
  await page.getByRole("alert").filter({ hasText: "Wrong email or password" }).waitFor()
  await page.getByLabel("Password").fill(password)
  await page.getByRole("button", { name: "Sign in" }).click()
  await page.getByTestId("customer-email").filter({ hasText: email }).waitFor()

  // The balance and the store's credit in the history.
  await page.getByTestId("dust-available").filter({ hasText: "1,000 dust" }).waitFor()
  const history = page.getByTestId("dust-history")
  await history.getByTestId("dust-entry").filter({ hasText: "Adjusted by the store: Welcome to the shop" }).filter({ hasText: "+1,000 dust" }).waitFor()

  // The dust-only product priced in dust, another in money (not the shirt: the admin flow may
  // have made it dust-only).
  const sticker = page.locator('[data-testid="product"][data-handle="dust-e2e-sticker"]')
  const giftCard = page.locator('[data-testid="product"][data-handle="dust-e2e-gift-card"]')
  await sticker.getByTestId("dust-price").filter({ hasText: `${PRICE} dust` }).waitFor()
  await giftCard.getByTestId("money-price").filter({ hasText: "$20.00" }).waitFor()
  assert.equal(await sticker.getByTestId("money-price").count(), 0, "no money price on a dust-only product")
  await B.shot(page, "storefront-signed-in", page.locator(".page"))

  // Into the cart, delivery, then dust: the form proposes the dust-only price.
  await sticker.getByRole("button", { name: "Add to cart" }).click()
  const cart = page.getByTestId("cart")
  await cart.getByText("1 × dust-e2e-sticker").waitFor()
  await cart.getByText("Your cart has dust-only items: apply at least 500 dust.").waitFor()
  await cart.getByRole("button", { name: "Save delivery" }).click()
  await cart.getByRole("button", { name: "Update delivery" }).waitFor()
  // $5 item + $5 shipping + 8.875 % tax on both = $10.89 (the e2e seed's region)
  await cart.getByTestId("cart-total").filter({ hasText: "$10.89" }).waitFor()
  assert.equal(await cart.getByRole("button", { name: "Place order" }).isDisabled(), true, "no order before the dust is applied")

  // More than the customer has is refused in the form; then the price is applied.
  const input = cart.getByLabel("Dust to apply")
  await input.fill("1.5")
  await cart.getByRole("button", { name: "Apply dust" }).click()
  await cart.getByRole("alert").filter({ hasText: "Enter a whole number of dust" }).waitFor()
  await input.fill(String(PRICE))
  await cart.getByRole("button", { name: "Apply dust" }).click()
  await cart.getByTestId("dust-applied").filter({ hasText: "500 dust applied ($5.00 off)" }).waitFor()
  await cart.getByTestId("cart-dust").filter({ hasText: "−$5.00 (500 dust)" }).waitFor()
  await cart.getByTestId("cart-total").filter({ hasText: "$5.89" }).waitFor()
  await page.getByTestId("dust-held").filter({ hasText: "500 dust" }).waitFor()
  const held = await B.dust("balance", customer.id, "--json")
  assert.deepEqual([held.dust.balance, held.dust.held, held.dust.available], [CREDIT, PRICE, CREDIT - PRICE], "Dust holds the cart's dust")
  await B.shot(page, "storefront-checkout", page.locator(".page"))

  // The order: Medusa charges the rest through the system provider; Dust captures the hold.
  await cart.getByRole("button", { name: "Place order" }).click()
  await page.getByTestId("order-placed").filter({ hasText: "You paid 500 dust of it with dust" }).waitFor({ timeout: 60_000 })
  await B.shot(page, "storefront-order-placed", page.locator(".page"))
  const settled = await B.waitFor(
    "Dust captured the order's dust",
    async () => {
      const b = await B.dust("balance", customer.id, "--json")
      return b.dust.held === 0 && b.dust.balance === CREDIT - PRICE ? b : null
    },
    { timeoutMs: 120_000 }
  )
  // A dust-only item earns nothing (the order's other money is shipping and tax).
  assert.deepEqual([settled.dust.balance, settled.dust.held, settled.dust.available], [CREDIT - PRICE, 0, CREDIT - PRICE])
  const entries = await B.dust("history", customer.id, "--json")
  assert.deepEqual(
    entries.filter((e) => e.kind === "dust").map((e) => [e.direction, e.amount, e.reason, e.balance_after]),
    [
      ["debit", PRICE, "spend", CREDIT - PRICE],
      ["credit", CREDIT, "adjustment", CREDIT],
    ]
  )
  const rec = await B.dust("reconcile", "--json")
  assert.equal(rec.ok, true, `dust reconcile: ${JSON.stringify(rec.discrepancies)}`)

  // The page again (the customer stays signed in): the spend in the history.
  await page.reload()
  await page.getByTestId("dust-available").filter({ hasText: "500 dust" }).waitFor()
  await history.getByTestId("dust-entry").first().filter({ hasText: "Paid an order" }).filter({ hasText: "−500 dust" }).waitFor()
  await B.shot(page, "storefront-history", page.locator(".page"))

  // Dust stops answering: the routes answer 503 after the plugin's timeout, the page says so.
  requestsWorker("SIGSTOP")
  try {
    await page.reload()
    await page
      .getByTestId("dust-balance")
      .getByRole("alert")
      .filter({ hasText: "Dust is not answering right now" })
      .waitFor({ timeout: 60_000 })
    await history.getByRole("alert").filter({ hasText: "Dust is not answering right now" }).waitFor({ timeout: 60_000 })
    await B.shot(page, "storefront-dust-down", page.locator(".page"))
  } finally {
    requestsWorker("SIGCONT")
  }
  await page.getByTestId("dust-balance").getByRole("button", { name: "Try again" }).click()
  await page.getByTestId("dust-available").filter({ hasText: "500 dust" }).waitFor({ timeout: 60_000 })
  assert.deepEqual(errors, [], "no uncaught error in the page")
})
