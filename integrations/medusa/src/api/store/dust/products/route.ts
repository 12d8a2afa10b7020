import type { MedusaRequest, MedusaResponse } from "@medusajs/framework/http"
import { productSettings } from "../../../../lib/forward"
import { StoreProducts, parseQuery } from "../../../validators"

/**
 * Dust settings of products, for the storefront's prices: `?id=prod_1&id=prod_2` ->
 * `{"products": [{"id", "dust_only", "dust_price"}]}` (from the products' metadata, the
 * same values the plugin forwards to Dust). Unknown ids are left out.
 */
export const GET = async (req: MedusaRequest, res: MedusaResponse) => {
  const { id } = parseQuery(StoreProducts, req.query)
  const ids = [...new Set(Array.isArray(id) ? id : [id])]
  const settings = await productSettings(req.scope, ids)
  res.json({
    products: ids.filter((i) => settings.has(i)).map((i) => ({ id: i, ...settings.get(i)! })),
  })
}
