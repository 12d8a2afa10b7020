import { ContainerRegistrationKeys } from "@medusajs/framework/utils"
import type { MedusaContainer } from "@medusajs/framework/types"
import { dustService } from "./service"

/**
 * Run one forwarding unless the event is in `skipEvents`. A failure is logged and thrown
 * again, so an event bus with retries (`@medusajs/event-bus-redis` with attempts) retries
 * it; without retries the catch-up sends it later.
 */
export async function forwarding(container: MedusaContainer, eventName: string, entityId: string, work: () => Promise<unknown>) {
  const logger = container.resolve(ContainerRegistrationKeys.LOGGER)
  if (dustService(container).options.skipEvents.has(eventName)) {
    logger.info(`dust: not forwarding ${eventName} ${entityId} (skipEvents)`)
    return
  }
  try {
    await work()
  } catch (error) {
    logger.error(`dust: forwarding ${eventName} ${entityId} failed: ${(error as Error)?.message ?? error}`)
    throw error
  }
}
