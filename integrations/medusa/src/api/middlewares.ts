import { authenticate, defineMiddlewares, validateAndTransformBody } from "@medusajs/framework/http"
import { AdminAdjust, AdminCatchUp, AdminResolve, StoreApplyToCart, StoreClaim } from "./validators"

// Store routes for the signed-in customer (Medusa's own customer auth: 401 without it);
// admin routes for admin users (session, bearer token or secret API key).
const customer = authenticate("customer", ["session", "bearer"])
const admin = authenticate("user", ["session", "bearer", "api-key"])

export default defineMiddlewares({
  routes: [
    { matcher: "/store/dust/balance", method: ["GET"], middlewares: [customer] },
    { matcher: "/store/dust/transactions", method: ["GET"], middlewares: [customer] },
    {
      matcher: "/store/dust/apply-to-cart",
      method: ["POST"],
      middlewares: [customer, validateAndTransformBody(StoreApplyToCart)],
    },
    { matcher: "/store/dust/apply-to-cart", method: ["DELETE"], middlewares: [customer] },
    {
      matcher: "/store/dust/store-credit/claim",
      method: ["POST"],
      middlewares: [customer, validateAndTransformBody(StoreClaim)],
    },
    { matcher: "/admin/dust/credit", method: ["POST"], middlewares: [admin, validateAndTransformBody(AdminAdjust)] },
    { matcher: "/admin/dust/debit", method: ["POST"], middlewares: [admin, validateAndTransformBody(AdminAdjust)] },
    { matcher: "/admin/dust/balance/:customer_id", method: ["GET"], middlewares: [admin] },
    { matcher: "/admin/dust/history/:customer_id", method: ["GET"], middlewares: [admin] },
    { matcher: "/admin/dust/overview", method: ["GET"], middlewares: [admin] },
    {
      matcher: "/admin/dust/events/:event_id/resolve",
      method: ["POST"],
      middlewares: [admin, validateAndTransformBody(AdminResolve)],
    },
    { matcher: "/admin/dust/catch-up", method: ["POST"], middlewares: [admin, validateAndTransformBody(AdminCatchUp)] },
  ],
})
