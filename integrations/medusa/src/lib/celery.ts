/**
 * A Celery client for Dust, written straight to Redis: Celery's message protocol v2 (JSON)
 * in kombu's Redis format, and replies read from Celery's Redis result backend.
 *
 * Why not celery-node: it binds one client to one queue (Dust has two), its `applyAsync()`
 * does not return the publish promise (a failed publish becomes an unhandled rejection and
 * the caller believes the event was sent), and it has no `expires`. Here every publish is
 * an awaited LPUSH whose failure reaches the caller, an event is marked as published in
 * the same MULTI as its LPUSH (the catch-up skips what was published), and a request
 * carries `expires` and waits at most `requestTimeoutMs` for its reply: then
 * `DustUnavailable`, never a hung request.
 *
 * Dust's Redis transport pops messages in kombu's format (`properties.delivery_tag` and
 * `delivery_info` let an unacknowledged message be handed out again after a crash), so
 * the envelope below is exactly what kombu itself writes.
 */
import { randomUUID } from "node:crypto"
import { hostname } from "node:os"
import Redis from "ioredis"

export const EVENTS_QUEUE = "dust.events"
export const REQUESTS_QUEUE = "dust.requests"
export const HANDLE_EVENT = "dust.handle_event"
/** Sorted set of the envelope ids published (score: when), read by the catch-up. */
export const PUBLISHED_KEY = "dust:medusa:published"
const RESULT_PREFIX = "celery-task-meta-"
const READY_STATES = new Set(["SUCCESS", "FAILURE", "REVOKED"])

/** Dust did not answer in time, or its Redis cannot be reached: a 503 for the caller. */
export class DustUnavailable extends Error {
  constructor(message: string) {
    super(message)
    this.name = "DustUnavailable"
  }
}

/** The task ran and raised (or was revoked): Dust's worker is up but failed the request. */
export class DustTaskFailed extends Error {
  constructor(
    message: string,
    readonly state: string
  ) {
    super(message)
    this.name = "DustTaskFailed"
  }
}

export interface TaskMessageOptions {
  id?: string
  queue: string
  expires?: Date
  ignoreResult?: boolean
}

/** One Celery protocol v2 message, as kombu stores it in a Redis list. */
export function taskMessage(
  task: string,
  args: unknown[],
  kwargs: Record<string, unknown>,
  options: TaskMessageOptions
): { id: string; text: string } {
  const id = options.id ?? randomUUID()
  const body = JSON.stringify([args, kwargs, { callbacks: null, errbacks: null, chain: null, chord: null }])
  const message = {
    body: Buffer.from(body, "utf-8").toString("base64"),
    "content-encoding": "utf-8",
    "content-type": "application/json",
    headers: {
      lang: "js",
      task,
      id,
      shadow: null,
      eta: null,
      expires: options.expires ? options.expires.toISOString() : null,
      group: null,
      group_index: null,
      retries: 0,
      timelimit: [null, null],
      root_id: id,
      parent_id: null,
      argsrepr: shorten(JSON.stringify(args)),
      kwargsrepr: shorten(JSON.stringify(kwargs)),
      origin: `medusa-plugin-dust@${hostname()}`,
      ignore_result: options.ignoreResult ?? false,
      stamped_headers: null,
      stamps: {},
    },
    properties: {
      correlation_id: id,
      reply_to: "",
      delivery_mode: 2,
      delivery_info: { exchange: options.queue, routing_key: options.queue },
      priority: 0,
      body_encoding: "base64",
      delivery_tag: randomUUID(),
    },
  }
  return { id, text: JSON.stringify(message) }
}

function describe(connection: Redis): string {
  const { host, port, db } = connection.options
  return `${host}:${port}/${db ?? 0}`
}

function shorten(text: string): string {
  return text.length > 500 ? `${text.slice(0, 497)}...` : text
}

export interface CeleryClientOptions {
  brokerUrl: string
  /** Celery result backend (Redis); default: the broker. */
  resultBackendUrl?: string
  /** Longest wait for a reply, and for a publish. */
  requestTimeoutMs: number
}

/** `promise`, or `DustUnavailable` after `ms`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DustUnavailable(`${what}: no answer within ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } catch (error) {
    if (error instanceof DustUnavailable || error instanceof DustTaskFailed) {
      throw error
    }
    throw new DustUnavailable(`${what}: ${(error as Error)?.message ?? error}`)
  } finally {
    clearTimeout(timer)
  }
}

type Waiter = (payload: Record<string, any>) => void

/**
 * How an idle connection tries again after Redis went away: 50 ms, 100 ms, ... then every
 * 500 ms. A command waits for the next attempt at most (see `CeleryClient.connected`), so
 * with Redis down a caller hears 503 within about half a second, and the plugin is back
 * within half a second of Redis.
 */
export function retryDelayMs(attempt: number): number {
  return Math.min(attempt * 50, 500)
}

export class CeleryClient {
  private readonly broker: Redis
  private readonly backend: Redis
  private readonly listener: Redis
  private readonly waiters = new Map<string, Waiter>()
  /** Per connection: the attempt under way, shared by every command waiting for it. */
  private readonly attempts = new Map<Redis, Promise<void>>()
  private readonly lastErrors = new Map<Redis, Error>()
  private listenerWasReady = false
  private closed = false

  constructor(readonly options: CeleryClientOptions) {
    const common = {
      // Connected on first use, by `connected()`: no command is sent before its connection
      // is ready (see there).
      lazyConnect: true,
      // A command caught by a lost connection fails after one retry instead of waiting
      // forever; every call is also bounded by withTimeout.
      maxRetriesPerRequest: 1,
      connectTimeout: Math.max(1000, options.requestTimeoutMs),
      retryStrategy: retryDelayMs,
    }
    this.broker = new Redis(options.brokerUrl, common)
    this.backend = new Redis(options.resultBackendUrl ?? options.brokerUrl, common)
    // The listener resubscribes itself after a reconnect (`resubscribe`): to the channels of
    // the requests still waiting, then reads their results, so a reply published while it
    // was away is not lost.
    this.listener = new Redis(options.resultBackendUrl ?? options.brokerUrl, {
      ...common,
      maxRetriesPerRequest: null,
      autoResubscribe: false,
    })
    for (const connection of [this.broker, this.backend, this.listener]) {
      // Errors surface on the commands; without a listener ioredis would print each retry.
      connection.on("error", (error: Error) => this.lastErrors.set(connection, error))
    }
    this.listener.on("ready", () => {
      if (this.listenerWasReady) {
        void this.resubscribe()
      }
      this.listenerWasReady = true
    })
    this.listener.on("message", (channel: string, text: string) => {
      const waiter = this.waiters.get(channel)
      if (!waiter) {
        return
      }
      try {
        waiter(JSON.parse(text))
      } catch {
        // not a result: ignore
      }
    })
  }

  /**
   * Resolves once `connection` is ready for commands; rejects when the attempt under way
   * (or the next one, while ioredis waits to reconnect) fails, or the client is closed.
   *
   * Why commands wait for this instead of riding ioredis's offline queue: while a lazy
   * connection is in its handshake (status `connect`), ioredis writes at once the commands
   * Redis accepts while loading, SUBSCRIBE among them, ahead of its own ready check. A
   * SUBSCRIBE there turns the connection into a subscriber before the ready check's INFO,
   * which ioredis then refuses ("Connection in subscriber mode"): the connection is torn
   * down as failed, the commands queued meanwhile are rejected (a 503 at once) and the
   * SUBSCRIBE that got through is not renewed on the new connection (its reply never
   * arrives: a 503 at the timeout). Two concurrent first requests did exactly that.
   */
  private connected(connection: Redis): Promise<void> {
    if (connection.status === "ready") {
      return Promise.resolve()
    }
    if (this.closed) {
      return Promise.reject(new DustUnavailable("the Dust client is closed"))
    }
    let attempt = this.attempts.get(connection)
    if (!attempt) {
      attempt = new Promise<void>((resolve, reject) => {
        const settle = (error?: Error) => {
          connection.off("ready", onReady)
          connection.off("close", onClose)
          connection.off("end", onClose)
          this.attempts.delete(connection)
          if (error) {
            reject(error)
          } else {
            resolve()
          }
        }
        const onReady = () => settle()
        const onClose = () => {
          const cause = this.lastErrors.get(connection)
          settle(new DustUnavailable(`Redis at ${describe(connection)}: ${cause?.message ?? "connection closed"}`))
        }
        connection.on("ready", onReady)
        connection.on("close", onClose)
        connection.on("end", onClose)
        // "wait": never connected (lazyConnect); "end": ioredis gave up. Otherwise an
        // attempt is under way or scheduled (reconnecting): its outcome settles this one.
        if (connection.status === "wait" || connection.status === "end") {
          this.lastErrors.delete(connection)
          connection.connect().catch(() => undefined)
        }
      })
      this.attempts.set(connection, attempt)
    }
    return attempt
  }

  /** After the listener reconnected: the waiting requests' channels again, then their results. */
  private async resubscribe(): Promise<void> {
    const keys = [...this.waiters.keys()]
    if (keys.length === 0) {
      return
    }
    try {
      await this.listener.subscribe(...keys)
    } catch {
      return // lost again: the next "ready" does this again
    }
    await Promise.all(keys.map((key) => this.deliverStored(key)))
  }

  /** Hand a stored result to its waiter, if the reply was stored while nobody listened. */
  private async deliverStored(key: string): Promise<void> {
    try {
      await this.connected(this.backend)
      const stored = await this.backend.get(key)
      if (stored) {
        this.waiters.get(key)?.(JSON.parse(stored))
      }
    } catch {
      // Not readable now: the request's own timeout bounds the wait.
    }
  }

  /**
   * Publish an envelope as `dust.handle_event` on `dust.events` and mark it published, in
   * one MULTI. Resolves once Redis has both; rejects (DustUnavailable) otherwise.
   */
  async publishEvent(envelope: { id: string }): Promise<void> {
    const { text } = taskMessage(HANDLE_EVENT, [envelope], {}, { queue: EVENTS_QUEUE, ignoreResult: true })
    await withTimeout(
      (async () => {
        await this.connected(this.broker)
        const results = await this.broker
          .multi()
          .lpush(EVENTS_QUEUE, text)
          .zadd(PUBLISHED_KEY, Date.now(), envelope.id)
          .exec()
        for (const [error] of results ?? []) {
          if (error) {
            throw error
          }
        }
        if (!results) {
          throw new Error("the transaction was discarded")
        }
      })(),
      this.options.requestTimeoutMs,
      `publishing ${envelope.id}`
    )
  }

  /** Which of these envelope ids were published (by this plugin, since pruning). */
  async published(ids: string[]): Promise<Set<string>> {
    if (ids.length === 0) {
      return new Set()
    }
    const scores = await withTimeout(
      (async () => {
        await this.connected(this.broker)
        const pipeline = this.broker.pipeline()
        for (const id of ids) {
          pipeline.zscore(PUBLISHED_KEY, id)
        }
        const results = (await pipeline.exec()) ?? []
        return results.map(([error, score]) => {
          if (error) {
            throw error
          }
          return score
        })
      })(),
      this.options.requestTimeoutMs,
      "reading published marks"
    )
    return new Set(ids.filter((_, i) => scores[i] !== null && scores[i] !== undefined))
  }

  /** Forget published marks older than `before` (the catch-up never looks that far back). */
  async prunePublished(before: Date): Promise<number> {
    return withTimeout(
      this.onBroker((broker) => broker.zremrangebyscore(PUBLISHED_KEY, "-inf", `(${before.getTime()}`)),
      this.options.requestTimeoutMs,
      "pruning published marks"
    )
  }

  /** A small value kept beside Dust's queues (the catch-up's watermark). */
  async getValue(key: string): Promise<string | null> {
    return withTimeout(
      this.onBroker((broker) => broker.get(key)),
      this.options.requestTimeoutMs,
      `reading ${key}`
    )
  }

  async setValue(key: string, value: string): Promise<void> {
    await withTimeout(
      this.onBroker((broker) => broker.set(key, value)),
      this.options.requestTimeoutMs,
      `writing ${key}`
    )
  }

  /**
   * Send a request task on `dust.requests` and wait for its reply. The message expires
   * when the wait ends, so a worker that comes back later does not act on a request whose
   * caller was already told 503.
   */
  async request<T = Record<string, any>>(task: string, kwargs: Record<string, unknown>): Promise<T> {
    const timeoutMs = this.options.requestTimeoutMs
    const expires = new Date(Date.now() + timeoutMs)
    const { id, text } = taskMessage(task, [], kwargs, { queue: REQUESTS_QUEUE, expires })
    const key = RESULT_PREFIX + id
    let resolveReply: Waiter = () => undefined
    const reply = new Promise<Record<string, any>>((resolve) => {
      resolveReply = resolve
    })
    // Registered before the SUBSCRIBE, so no message on the channel can pass unseen.
    this.waiters.set(key, (payload) => {
      if (READY_STATES.has(payload?.status)) {
        resolveReply(payload)
      }
    })
    try {
      const payload = await withTimeout(
        (async () => {
          // Subscribed before the LPUSH: the worker cannot reply before we listen.
          await this.connected(this.listener)
          await this.listener.subscribe(key)
          await this.connected(this.broker)
          await this.broker.lpush(REQUESTS_QUEUE, text)
          // The listener may have lost the connection meanwhile (a reply published then is
          // not delivered): the stored result covers that; `resubscribe` covers a later loss.
          void this.deliverStored(key)
          return reply
        })(),
        timeoutMs,
        `Dust request ${task}`
      )
      if (payload.status !== "SUCCESS") {
        const result = payload.result ?? {}
        const detail = result.exc_type ? `${result.exc_type}: ${result.exc_message}` : JSON.stringify(result)
        throw new DustTaskFailed(`Dust request ${task} ${String(payload.status).toLowerCase()}: ${detail}`, payload.status)
      }
      return payload.result as T
    } finally {
      this.waiters.delete(key)
      // Best effort, and only on a live connection (nothing piles up in ioredis's offline
      // queue while Redis is away): a reconnected listener subscribes to the waiting
      // requests' channels only, and Celery's result_expires removes a result left behind.
      if (this.listener.status === "ready") {
        this.listener.unsubscribe(key).catch(() => undefined)
      }
      if (this.backend.status === "ready") {
        this.backend.del(key).catch(() => undefined)
      }
    }
  }

  /** `command` once the broker connection is ready. */
  private async onBroker<T>(command: (broker: Redis) => Promise<T>): Promise<T> {
    await this.connected(this.broker)
    return command(this.broker)
  }

  async close(): Promise<void> {
    this.closed = true
    await Promise.allSettled(
      [this.broker, this.backend, this.listener].map((connection) =>
        // quit() on a connection never used would connect it first.
        connection.status === "wait" ? Promise.resolve(connection.disconnect()) : connection.quit()
      )
    )
  }
}
