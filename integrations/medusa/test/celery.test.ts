import { describe, expect, it } from "vitest"
import { DustUnavailable, EVENTS_QUEUE, REQUESTS_QUEUE, taskMessage, withTimeout } from "../src/lib/celery"
import { resolveOptions } from "../src/lib/options"

describe("Celery protocol v2 messages as kombu writes them to Redis", () => {
  it("an event: dust.handle_event with the envelope as its one argument, no result kept", () => {
    const envelope = { id: "order.placed:order_1", name: "order.placed", data: { id: "order_1" } }
    const { id, text } = taskMessage("dust.handle_event", [envelope], {}, { queue: EVENTS_QUEUE, ignoreResult: true })
    const message = JSON.parse(text)
    expect(message["content-type"]).toBe("application/json")
    expect(message.properties).toMatchObject({
      correlation_id: id,
      body_encoding: "base64",
      delivery_mode: 2,
      delivery_info: { exchange: "dust.events", routing_key: "dust.events" },
    })
    // kombu's redelivery after a crash needs a delivery tag of the message's own.
    expect(typeof message.properties.delivery_tag).toBe("string")
    expect(message.headers).toMatchObject({ task: "dust.handle_event", id, root_id: id, retries: 0, ignore_result: true, expires: null })
    const body = JSON.parse(Buffer.from(message.body, "base64").toString("utf-8"))
    expect(body).toEqual([[envelope], {}, { callbacks: null, errbacks: null, chain: null, chord: null }])
  })

  it("a request: kwargs, and an expiry so a late worker does not act on an abandoned request", () => {
    const expires = new Date("2026-12-01T10:00:05.000Z")
    const { text } = taskMessage("dust.balance", [], { customer_id: "cus_1" }, { queue: REQUESTS_QUEUE, expires })
    const message = JSON.parse(text)
    expect(message.headers.expires).toBe("2026-12-01T10:00:05.000Z")
    expect(message.properties.delivery_info.routing_key).toBe("dust.requests")
    expect(JSON.parse(Buffer.from(message.body, "base64").toString())[1]).toEqual({ customer_id: "cus_1" })
  })

  it("every message has ids of its own", () => {
    const a = JSON.parse(taskMessage("t", [], {}, { queue: "q" }).text)
    const b = JSON.parse(taskMessage("t", [], {}, { queue: "q" }).text)
    expect(a.headers.id).not.toBe(b.headers.id)
    expect(a.properties.delivery_tag).not.toBe(b.properties.delivery_tag)
  })
})

describe("timeouts", () => {
  it("a request nobody answers ends in DustUnavailable, not a hang", async () => {
    const never = new Promise<never>(() => undefined)
    const started = Date.now()
    await expect(withTimeout(never, 50, "Dust request dust.balance")).rejects.toBeInstanceOf(DustUnavailable)
    expect(Date.now() - started).toBeLessThan(1000)
  })
  it("a failed publish (Redis refused) is DustUnavailable, surfaced to the caller", async () => {
    await expect(withTimeout(Promise.reject(new Error("ECONNREFUSED")), 1000, "publishing x")).rejects.toThrow(
      /publishing x: ECONNREFUSED/
    )
  })
})

describe("options", () => {
  it("needs Dust's Redis URL; defaults the rest", () => {
    expect(() => resolveOptions({}, {})).toThrow(/brokerUrl/)
    const options = resolveOptions({}, { DUST_BROKER_URL: "redis://127.0.0.1:6381/14" })
    expect(options).toMatchObject({
      brokerUrl: "redis://127.0.0.1:6381/14",
      resultBackendUrl: "redis://127.0.0.1:6381/14",
      requestTimeoutMs: 5000,
      refundsToStoreCredit: true,
    })
    expect([...options.skipEvents]).toEqual([])
  })
  it("skipEvents from the option and DUST_SKIP_EVENTS", () => {
    const options = resolveOptions(
      { brokerUrl: "redis://h/1", skipEvents: ["order.canceled"], refundsToStoreCredit: false },
      { DUST_SKIP_EVENTS: "order.placed, payment.refunded" }
    )
    expect([...options.skipEvents].sort()).toEqual(["order.canceled", "order.placed", "payment.refunded"])
    expect(options.refundsToStoreCredit).toBe(false)
    expect(() => resolveOptions({ brokerUrl: "redis://h/1", requestTimeoutMs: -1 }, {})).toThrow(/requestTimeoutMs/)
  })
})
