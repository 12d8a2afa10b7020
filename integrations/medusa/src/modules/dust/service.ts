import { CeleryClient } from "../../lib/celery"
import { DustPluginOptions, ResolvedOptions, resolveOptions } from "../../lib/options"

/**
 * Holds the plugin's options and its one Celery client (three Redis connections), so
 * subscribers, routes and the catch-up share them. No data models: Dust keeps the ledger.
 */
export default class DustModuleService {
  readonly options: ResolvedOptions
  readonly client: CeleryClient

  constructor(_container: Record<string, unknown>, options: DustPluginOptions = {}) {
    this.options = resolveOptions(options)
    this.client = new CeleryClient({
      brokerUrl: this.options.brokerUrl,
      resultBackendUrl: this.options.resultBackendUrl,
      requestTimeoutMs: this.options.requestTimeoutMs,
    })
  }

  __hooks = {
    onApplicationShutdown: async () => {
      await this.client.close()
    },
  }
}
