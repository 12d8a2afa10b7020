import Medusa from "@medusajs/js-sdk"

/**
 * The admin's own origin with the admin user's session cookie: the dashboard that loads
 * these widgets is served by the Medusa backend they call. (`import.meta.env` would be fixed
 * when the plugin is built, not where it runs, so no URL is baked in.)
 */
export const sdk = new Medusa({ baseUrl: "/", auth: { type: "session" } })
