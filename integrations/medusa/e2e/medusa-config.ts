// A Medusa backend with the Dust plugin, configured from the environment. The defaults are
// the CI machine's: PostgreSQL and Redis on 127.0.0.1, databases of the test's own.
import { defineConfig } from "@medusajs/framework/utils"

const env = (name: string, fallback: string): string => process.env[name] || fallback

const redisUrl = env("MEDUSA_REDIS_URL", "redis://127.0.0.1:6379/8")
const port = env("MEDUSA_PORT", "9000")
// Extra origins (a storefront served by the browser test) in MEDUSA_EXTRA_CORS, comma-separated.
const cors = [`http://localhost:${port}`, `http://127.0.0.1:${port}`, process.env.MEDUSA_EXTRA_CORS]
  .filter(Boolean)
  .join(",")
// DUST_E2E_ADMIN=1 (the browser test): the admin is built and served, Medusa runs with
// NODE_ENV=production, whose session cookie is `Secure`; over plain http the browser would
// drop it and the login would loop back to the login page, so the test turns it off.
const withAdmin = process.env.DUST_E2E_ADMIN === "1"

// DUST_E2E_WITHOUT_PLUGIN=1 runs the store without Dust: the catch-up flow places an order
// while it is so (an order Dust never heard of), then starts the store with the plugin again.
const withPlugin = process.env.DUST_E2E_WITHOUT_PLUGIN !== "1"
module.exports = defineConfig({
  projectConfig: {
    databaseUrl: env("MEDUSA_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/dust_medusa_e2e"),
    databaseDriverOptions: { connection: { ssl: false } },
    ...(withAdmin ? { cookieOptions: { secure: false, sameSite: "lax" as const } } : {}),
    redisUrl,
    // "server" for a `medusa exec` that only emits: the running store does the work.
    workerMode: (process.env.MEDUSA_WORKER_MODE || "shared") as "shared" | "worker" | "server",
    http: {
      storeCors: cors,
      adminCors: cors,
      authCors: cors,
      jwtSecret: env("MEDUSA_JWT_SECRET", "dust-e2e-jwt-secret"),
      cookieSecret: env("MEDUSA_COOKIE_SECRET", "dust-e2e-cookie-secret"),
    },
  },
  admin: { disable: !withAdmin },
  modules: [
    {
      // Medusa's default local event bus neither retries a failed subscriber nor survives a
      // crash; the Redis bus retries only when jobOptions.attempts is set.
      resolve: "@medusajs/medusa/event-bus-redis",
      options: {
        redisUrl,
        queueName: env("MEDUSA_EVENTS_QUEUE", "dust-e2e-events"),
        jobOptions: { attempts: 5, backoff: { type: "fixed", delay: 500 }, removeOnComplete: true },
      },
    },
  ],
  plugins: withPlugin ? [
    {
      resolve: "medusa-plugin-dust",
      options: {
        brokerUrl: env("DUST_BROKER_URL", "redis://127.0.0.1:6379/9"),
        requestTimeoutMs: 10000,
        refundsToStoreCredit: true,
      },
    },
  ] : [],
})
