import { defineConfig } from "vitest/config"
import react from "@vitejs/plugin-react"

export default defineConfig({
  plugins: [react()],
  // Under Vitest: no warnings about the JS SDK's published sourcemaps (they name missing sources).
  logLevel: process.env.VITEST ? "error" : "info",
  test: {
    environment: "jsdom",
    setupFiles: ["./test/setup.ts"],
    include: ["test/**/*.test.tsx", "test/**/*.test.ts"],
  },
})
