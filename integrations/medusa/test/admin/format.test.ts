import { describe, expect, it } from "vitest"
import { formatDust, formatMoney } from "../../src/admin/lib/format"
import { readSettings, settingsMetadata } from "../../src/admin/lib/product-settings"
import { reasonText, wholeAmount } from "../../src/admin/lib/validate"
import { errorMessage } from "../../src/admin/lib/api"
import { FetchError } from "@medusajs/js-sdk"

describe("formatMoney: minor units by the currency's digits", () => {
  it.each([
    [12935, "usd", "$129.35"],
    [1200, "jpy", "¥1,200"],
    [5, "usd", "$0.05"],
    [0, "usd", "$0.00"],
    [-12935, "usd", "-$129.35"],
    [12345, "kwd", "KWD 12.345"],
    [123456789012345, "usd", "$1,234,567,890,123.45"],
  ])("%i %s -> %s", (minor, currency, text) => {
    expect(formatMoney(minor, currency).replace(/\u00a0/g, " ")).toBe(text)
  })
  it("groups dust", () => expect(formatDust(12500)).toBe("12,500"))
})

describe("wholeAmount", () => {
  it.each(["250", " 250 ", "250.0"])("accepts %j", (text) => {
    expect(wholeAmount(text)).toEqual({ ok: true, value: 250 })
  })
  it.each([
    ["", "Amount is required."],
    ["-5", "Amount must be positive: -5 is negative."],
    ["2.5", "Amount must be a whole number: 2.5 has a fraction."],
    ["abc", "Amount must be a whole number, like 250."],
    ["0", "Amount must be at least 1."],
    ["99999999999999999999", "Amount is too large."],
  ])("refuses %j", (text, error) => {
    expect(wholeAmount(text)).toEqual({ ok: false, error })
  })
  it("requires a reason", () => {
    expect(reasonText("   ")).toEqual({ ok: false, error: "A reason is required: it is kept with the entry." })
    expect(reasonText(" goodwill ")).toEqual({ ok: true, value: "goodwill" })
    expect(reasonText("x".repeat(2001)).ok).toBe(false)
  })
})

describe("product settings, as the plugin's mapping reads them", () => {
  it("reads metadata values given as text too", () => {
    expect(readSettings({ dust_only: "true", dust_price: "1500" })).toEqual({ dustOnly: true, price: "1500" })
    expect(readSettings({ dust_only: false, dust_price: 1.5 })).toEqual({ dustOnly: false, price: "" })
    expect(readSettings(null)).toEqual({ dustOnly: false, price: "" })
  })
  it("writes a positive whole price for a dust-only product", () => {
    expect(settingsMetadata(true, "1500")).toEqual({ ok: true, value: { dust_only: true, dust_price: 1500 } })
    expect(settingsMetadata(false, "")).toEqual({ ok: true, value: { dust_only: false, dust_price: "" } })
    expect(settingsMetadata(true, "").ok).toBe(false)
    expect(settingsMetadata(true, "0")).toEqual({ ok: false, error: "The dust price must be at least 1." })
    expect(settingsMetadata(true, "12.5").ok).toBe(false)
  })
})

describe("errorMessage", () => {
  it("says Dust is not answering for the routes' 503", () => {
    const down = new FetchError("Dust is not answering: timeout", "Service Unavailable", 503)
    expect(errorMessage(down)).toBe(
      "Dust is not answering right now. Try again in a minute; if it lasts, check that Dust's workers are running."
    )
    expect(errorMessage(down, { write: true })).toMatch(/^Dust is not answering right now, so nothing was changed\. /)
  })
  it("spells out insufficient funds", () => {
    expect(errorMessage(new FetchError("insufficient funds: available 40, requested 100", "Bad Request", 400))).toBe(
      "Dust refused: insufficient funds — only 40 available, 100 requested."
    )
  })
  it("names who refused", () => {
    expect(errorMessage(new FetchError("no such product", "Not Found", 404), { refusedBy: "Medusa" })).toBe(
      "Medusa refused: no such product"
    )
  })
  it("names a network failure", () => {
    expect(errorMessage(new TypeError("Failed to fetch"))).toBe("Could not reach the store's server: Failed to fetch.")
  })
})
