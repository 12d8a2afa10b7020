// What the browser flows share: Debian's Chromium through playwright-core (never a downloaded
// browser), a fresh profile per browser, the admin's login, screenshots into $UI_ARTIFACTS and
// the Medusa API helpers of the API flows (lib.mjs: admin, store, registerCustomer, SEED, and
// `dust(...args)` for Dust's command line, `waitFor`), re-exported.
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { chromium } from "playwright-core"

export * from "../../e2e/flows/lib.mjs"

export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium"
export const ARTIFACTS = process.env.UI_ARTIFACTS || new URL("../artifacts", import.meta.url).pathname
export const MEDUSA = process.env.MEDUSA_URL || "http://127.0.0.1:9000"
export const ADMIN = { email: process.env.MEDUSA_ADMIN_EMAIL, password: process.env.MEDUSA_ADMIN_PASSWORD }

export const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
]

/** A Chromium with a fresh profile; `close()` ends it and removes the profile. */
export async function browser({ width = 1440, height = 1000 } = {}) {
  const profile = mkdtempSync(join(tmpdir(), "dust-ui-"))
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width, height },
  })
  const page = context.pages()[0] ?? (await context.newPage())
  page.setDefaultTimeout(30_000)
  const errors = []
  page.on("pageerror", (e) => errors.push(String(e)))
  return {
    context,
    page,
    errors,
    async close() {
      await context.close().catch(() => {})
      rmSync(profile, { recursive: true, force: true })
    },
  }
}

/** Sign in to Medusa's admin (/app) as the test's admin user. */
export async function adminLogin(page) {
  await page.goto(`${MEDUSA}/app/login`)
  await page.getByPlaceholder("Email").fill(ADMIN.email)
  await page.getByPlaceholder("Password").fill(ADMIN.password)
  await page.getByRole("button", { name: "Continue with Email" }).click()
  await page.waitForURL((url) => !url.pathname.endsWith("/login"), { timeout: 60_000 })
}

/** A screenshot in $UI_ARTIFACTS/<name>.png: of `locator` when given, else the viewport
 * (the admin scrolls an inner container, so a full-page shot shows no more). */
export async function shot(page, name, locator) {
  const path = join(ARTIFACTS, `${name}.png`)
  if (locator) {
    await locator.screenshot({ path })
  } else {
    await page.screenshot({ path })
  }
  return path
}
