import type { MedusaContainer } from "@medusajs/framework/types"
import type DustModuleService from "../modules/dust/service"

/** The plugin's module (options + Celery client) from a request's or a subscriber's container. */
export function dustService(container: MedusaContainer | { resolve: MedusaContainer["resolve"] }): DustModuleService {
  return container.resolve("dust") as DustModuleService
}
