/**
 * The plugin's options (medusa-config.ts: `plugins: [{ resolve: "medusa-plugin-dust",
 * options }]`), with their defaults. Medusa hands the same object to the plugin's module
 * and to its subscribers.
 */
export interface DustPluginOptions {
  /** Dust's Celery broker, `redis://host:6379/0` (the worker's DUST_BROKER_URL). Default: env DUST_BROKER_URL. */
  brokerUrl?: string
  /** Dust's Celery result backend (the worker's DUST_RESULT_BACKEND). Default: env DUST_RESULT_BACKEND, else the broker. */
  resultBackendUrl?: string
  /** Longest wait for Dust's reply to a request (and for a publish), in ms. Default 5000. */
  requestTimeoutMs?: number
  /** Medusa refunds go to the customer's store credit in Dust. Default true. */
  refundsToStoreCredit?: boolean
  /** Event names the subscribers do not forward (the catch-up still does). Env DUST_SKIP_EVENTS (comma-separated) adds to it. */
  skipEvents?: string[]
  /** How far back the catch-up looks on its first run, in minutes. Default 1440 (one day). */
  catchUpLookbackMinutes?: number
  /** The catch-up starts this far before its watermark, in minutes (clock skew, slow commits). Default 10. */
  catchUpOverlapMinutes?: number
  /** Longest wait after a guest refund for Dust's claim code, in ms. Default 10000. */
  claimCodeWaitMs?: number
}

export interface ResolvedOptions {
  brokerUrl: string
  resultBackendUrl: string
  requestTimeoutMs: number
  refundsToStoreCredit: boolean
  skipEvents: Set<string>
  catchUpLookbackMinutes: number
  catchUpOverlapMinutes: number
  claimCodeWaitMs: number
}

function positive(value: unknown, name: string, fallback: number): number {
  if (value === undefined || value === null) {
    return fallback
  }
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    throw new Error(`medusa-plugin-dust: option ${name} must be a positive number, got ${JSON.stringify(value)}`)
  }
  return value
}

export function resolveOptions(
  options: DustPluginOptions = {},
  env: Record<string, string | undefined> = process.env
): ResolvedOptions {
  const brokerUrl = options.brokerUrl ?? env.DUST_BROKER_URL
  if (!brokerUrl || !/^rediss?:\/\//.test(brokerUrl)) {
    throw new Error(
      `medusa-plugin-dust: option brokerUrl (or env DUST_BROKER_URL) must be Dust's Redis broker URL, got ${JSON.stringify(brokerUrl)}`
    )
  }
  const skip = new Set<string>(options.skipEvents ?? [])
  for (const name of (env.DUST_SKIP_EVENTS ?? "").split(",")) {
    if (name.trim()) {
      skip.add(name.trim())
    }
  }
  return {
    brokerUrl,
    resultBackendUrl: options.resultBackendUrl ?? env.DUST_RESULT_BACKEND ?? brokerUrl,
    requestTimeoutMs: positive(options.requestTimeoutMs, "requestTimeoutMs", 5000),
    refundsToStoreCredit: options.refundsToStoreCredit ?? true,
    skipEvents: skip,
    catchUpLookbackMinutes: positive(options.catchUpLookbackMinutes, "catchUpLookbackMinutes", 1440),
    catchUpOverlapMinutes: positive(options.catchUpOverlapMinutes, "catchUpOverlapMinutes", 10),
    claimCodeWaitMs: positive(options.claimCodeWaitMs, "claimCodeWaitMs", 10000),
  }
}
