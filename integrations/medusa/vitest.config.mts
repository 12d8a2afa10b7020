import { defineConfig } from "vitest/config"

export default defineConfig({
  // The admin's widgets and page (src/admin, React 18): automatic JSX runtime.
  esbuild: { jsx: "automatic" },
  test: {
    include: ["test/**/*.test.ts", "test/**/*.test.tsx"],
    environment: "node",
    // The admin tests run in jsdom (each file says `@vitest-environment jsdom`).
    setupFiles: ["test/admin/setup.ts"],
  },
})
