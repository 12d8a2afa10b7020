// Emits Medusa events again through the store's own event bus, as Medusa does when it
// redelivers one: `medusa exec ./src/scripts/emit.ts '[{"name": "order.placed", "data": {"id": "order_1"}}]'`.
// Run with MEDUSA_WORKER_MODE=server so that the running store, not this process, handles them.
import { ExecArgs } from "@medusajs/framework/types"
import { Modules } from "@medusajs/framework/utils"

export default async function emit({ container, args }: ExecArgs) {
  const events = JSON.parse(args[0]) as { name: string; data: Record<string, unknown> }[]
  const bus = container.resolve(Modules.EVENT_BUS)
  await bus.emit(events.map(({ name, data }) => ({ name, data })))
  console.log(`emitted ${events.length} event(s)`)
}
