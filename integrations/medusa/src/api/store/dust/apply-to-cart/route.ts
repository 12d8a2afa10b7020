import type { AuthenticatedMedusaRequest, MedusaResponse } from "@medusajs/framework/http"
import { CartRefusal, Kind, applyToCart, loadCart, ownCart, releaseKinds } from "../../../../lib/cart"
import { withDust } from "../../../../lib/http"
import { StoreApplyToCartType, StoreRemoveFromCart, parseQuery } from "../../../validators"

async function answer(res: MedusaResponse, work: () => Promise<unknown>) {
  try {
    await withDust(res, work)
  } catch (error) {
    if (error instanceof CartRefusal) {
      res.status(error.status).json(error.body)
      return
    }
    throw error
  }
}

/**
 * `{"cart_id", "amount", "kind": "dust"|"store_credit"}`: reserve `amount` (dust, or
 * store-credit minor units) in Dust for the customer's own cart and record it on the cart
 * as a credit line; `amount` 0 removes that kind. Replies `{"cart", "hold", ...}`.
 */
export const POST = async (req: AuthenticatedMedusaRequest<StoreApplyToCartType>, res: MedusaResponse) => {
  await answer(res, async () => {
    const { cart_id, amount, kind } = req.validatedBody
    const customerId = req.auth_context.actor_id
    const cart = await ownCart(req.scope, cart_id, customerId)
    if (amount === 0) {
      const released = await releaseKinds(req.scope, cart, customerId, [kind as Kind])
      res.json({ cart: await loadCart(req.scope, cart_id), ...released })
      return
    }
    const applied = await applyToCart(req.scope, cart, customerId, amount, kind as Kind)
    res.json({ cart: await loadCart(req.scope, cart_id), ...applied })
  })
}

/** `?cart_id=...[&kind=dust|store_credit]`: remove Dust's credit lines (all kinds by default), release the holds. */
export const DELETE = async (req: AuthenticatedMedusaRequest, res: MedusaResponse) => {
  const { cart_id, kind } = parseQuery(StoreRemoveFromCart, req.query)
  await answer(res, async () => {
    const customerId = req.auth_context.actor_id
    const cart = await ownCart(req.scope, cart_id, customerId)
    const kinds: Kind[] = kind ? [kind as Kind] : ["dust", "store_credit"]
    const released = await releaseKinds(req.scope, cart, customerId, kinds)
    res.json({ cart: await loadCart(req.scope, cart_id), ...released })
  })
}
