/**
 * CeleryClient against a real Redis, with a responder that answers `dust.requests` the way
 * Dust's worker does through Celery's Redis result backend: the result stored under
 * `celery-task-meta-<id>` and published on that channel, in one MULTI.
 *
 * Redis: DUST_MEDUSA_TEST_REDIS_URL (default redis://127.0.0.1:6379/7; the test empties
 * `dust.requests` in that database). Without a Redis these tests are skipped, except under
 * CI=true where they fail.
 */
import { createServer } from "node:net"
import Redis from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { CeleryClient, DustUnavailable, REQUESTS_QUEUE } from "../src/lib/celery"

const REDIS_URL = process.env.DUST_MEDUSA_TEST_REDIS_URL ?? "redis://127.0.0.1:6379/7"

let redis: Redis | undefined
let unreachable: string | undefined

beforeAll(async () => {
  const probe = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  let cause: Error | undefined
  probe.on("error", (error: Error) => {
    cause ??= error
  })
  try {
    await probe.connect()
    await probe.ping()
    redis = probe
    await redis.del(REQUESTS_QUEUE)
  } catch (error) {
    probe.disconnect()
    unreachable = `no Redis at ${REDIS_URL} (DUST_MEDUSA_TEST_REDIS_URL): ${(cause ?? (error as Error)).message}`
    if (process.env.CI === "true") {
      throw new Error(unreachable)
    }
  }
})

afterAll(async () => {
  await redis?.del(REQUESTS_QUEUE)
  redis?.disconnect()
})

function needsRedis(skip: (note?: string) => void): Redis {
  if (!redis) {
    skip(unreachable)
  }
  return redis!
}

interface Responder {
  stop(): Promise<void>
  answered: number
}

/**
 * Answers every request on `dust.requests` with `{"task": ..., "kwargs": ...}`. `beforeReply`
 * runs between taking the message and storing its result.
 */
function respond(beforeReply: () => Promise<void> = async () => undefined): Responder {
  const popper = new Redis(REDIS_URL)
  const writer = new Redis(REDIS_URL)
  let running = true
  const state = { answered: 0 }
  const loop = (async () => {
    while (running) {
      const popped = await popper.brpop(REQUESTS_QUEUE, 0.1)
      if (!popped) {
        continue
      }
      const message = JSON.parse(popped[1])
      const [, kwargs] = JSON.parse(Buffer.from(message.body, "base64").toString("utf-8"))
      const id = message.headers.id
      await beforeReply()
      const meta = JSON.stringify({
        status: "SUCCESS",
        result: { task: message.headers.task, kwargs },
        traceback: null,
        children: [],
        date_done: new Date().toISOString(),
        task_id: id,
      })
      const key = `celery-task-meta-${id}`
      await writer.multi().setex(key, 60, meta).publish(key, meta).exec()
      state.answered += 1
    }
  })()
  return {
    get answered() {
      return state.answered
    },
    async stop() {
      running = false
      await loop
      popper.disconnect()
      writer.disconnect()
    },
  }
}

const nextTick = () => new Promise<void>((resolve) => setImmediate(resolve))

describe("CeleryClient on a real Redis", () => {
  it("the first concurrent requests of a new client all get their own replies", async ({ skip }) => {
    needsRedis(skip)
    const responder = respond()
    const failures: string[] = []
    try {
      // Each round: a new client (nothing connected yet) and 2 to 5 requests, the later ones
      // sent `spacing` event-loop turns apart, so that across the rounds they meet the
      // client's connections in every stage of connecting: before, during the handshake,
      // after. Two such requests once broke the listener's first connection.
      for (let spacing = 0; spacing < 24; spacing++) {
        const client = new CeleryClient({ brokerUrl: REDIS_URL, requestTimeoutMs: 2000 })
        const count = 2 + (spacing % 4)
        const requests: Promise<unknown>[] = []
        for (let i = 0; i < count; i++) {
          for (let turn = 0; turn < (i === 0 ? 0 : spacing); turn++) {
            await nextTick()
          }
          requests.push(client.request("dust.balance", { customer_id: `cus_${spacing}_${i}` }))
        }
        const results = await Promise.allSettled(requests)
        results.forEach((result, i) => {
          const expected = { task: "dust.balance", kwargs: { customer_id: `cus_${spacing}_${i}` } }
          if (result.status === "rejected") {
            failures.push(`spacing ${spacing}, request ${i + 1}/${count}: ${result.reason}`)
          } else if (JSON.stringify(result.value) !== JSON.stringify(expected)) {
            failures.push(`spacing ${spacing}, request ${i + 1}/${count}: ${JSON.stringify(result.value)}`)
          }
        })
        await client.close()
      }
    } finally {
      await responder.stop()
    }
    expect(failures).toEqual([])
  }, 120_000)

  it("a reply published while the listener is reconnecting is still delivered", async ({ skip }) => {
    const admin = needsRedis(skip)
    // Between taking the request and replying, Redis drops the client's subscribed
    // connection: the reply is published while nobody listens on its channel.
    const responder = respond(async () => {
      const clients = String(await admin.client("LIST", "TYPE", "pubsub"))
      const ours = clients.split("\n").filter((line) => line.includes(` db=${dbOf(REDIS_URL)} `))
      for (const line of ours) {
        const id = /(?:^|\s)id=(\d+)/.exec(line)?.[1]
        if (id) {
          await admin.client("KILL", "ID", id)
        }
      }
      // Long enough for the client to have read the result key (not there yet), short of
      // its first reconnect (50 ms).
      await new Promise((resolve) => setTimeout(resolve, 20))
    })
    const client = new CeleryClient({ brokerUrl: REDIS_URL, requestTimeoutMs: 3000 })
    try {
      await expect(client.request("dust.balance", { customer_id: "cus_gap" })).resolves.toEqual({
        task: "dust.balance",
        kwargs: { customer_id: "cus_gap" },
      })
      expect(responder.answered).toBe(1)
      // And the client goes on working on its new connection.
      await responder.stop()
      const plain = respond()
      try {
        await expect(client.request("dust.balance", { customer_id: "cus_after" })).resolves.toMatchObject({
          kwargs: { customer_id: "cus_after" },
        })
      } finally {
        await plain.stop()
      }
    } finally {
      await responder.stop()
      await client.close()
    }
  }, 30_000)

  it("a request nobody answers is DustUnavailable after requestTimeoutMs and expires then", async ({ skip }) => {
    const admin = needsRedis(skip)
    const client = new CeleryClient({ brokerUrl: REDIS_URL, requestTimeoutMs: 300 })
    try {
      const started = Date.now()
      await expect(client.request("dust.balance", { customer_id: "cus_nobody" })).rejects.toBeInstanceOf(DustUnavailable)
      const waited = Date.now() - started
      expect(waited).toBeGreaterThanOrEqual(290)
      expect(waited).toBeLessThan(2000)
      const [left] = await admin.lrange(REQUESTS_QUEUE, 0, -1)
      const expires = Date.parse(JSON.parse(left).headers.expires)
      expect(Math.abs(expires - (started + 300))).toBeLessThan(200)
    } finally {
      await admin.del(REQUESTS_QUEUE)
      await client.close()
    }
  })
})

describe("CeleryClient with its Redis down", () => {
  it("requests and publishes are DustUnavailable at once, first and later", async () => {
    const port = await closedPort()
    const client = new CeleryClient({ brokerUrl: `redis://127.0.0.1:${port}/7`, requestTimeoutMs: 5000 })
    try {
      for (const round of [1, 2]) {
        const started = Date.now()
        const outcomes = await Promise.allSettled([
          client.request("dust.balance", { customer_id: "cus_1" }),
          client.request("dust.history", { customer_id: "cus_1" }),
          client.publishEvent({ id: `order.placed:order_${round}` }),
          client.getValue("dust:medusa:watermark"),
        ])
        for (const outcome of outcomes) {
          expect(outcome.status).toBe("rejected")
          expect((outcome as PromiseRejectedResult).reason).toBeInstanceOf(DustUnavailable)
          expect(String((outcome as PromiseRejectedResult).reason.message)).toMatch(/ECONNREFUSED/)
        }
        // Not the 5 s timeout: the failed connection attempt answers.
        expect(Date.now() - started).toBeLessThan(1500)
        // Later: the client has been retrying meanwhile, at its longest interval.
        await new Promise((resolve) => setTimeout(resolve, 1500))
      }
    } finally {
      await client.close()
    }
  }, 10_000)

  it("a closed client refuses at once", async () => {
    const client = new CeleryClient({ brokerUrl: "redis://127.0.0.1:1/7", requestTimeoutMs: 5000 })
    await client.close()
    await expect(client.request("dust.balance", {})).rejects.toThrow(/closed/)
  })
})

function dbOf(url: string): string {
  return new URL(url).pathname.replace("/", "") || "0"
}

/** A local port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}
