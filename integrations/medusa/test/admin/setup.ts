export {}

// jsdom lacks what Radix (under @medusajs/ui) calls in a browser; only for the admin tests.
if (typeof window !== "undefined") {
  const { cleanup } = await import("@testing-library/react")
  const { afterEach } = await import("vitest")
  afterEach(() => cleanup())
  class ResizeObserver {
    observe() {}
    unobserve() {}
    disconnect() {}
  }
  Object.assign(globalThis, { ResizeObserver })
  const proto = window.HTMLElement.prototype as any
  proto.hasPointerCapture ??= () => false
  proto.setPointerCapture ??= () => {}
  proto.releasePointerCapture ??= () => {}
  proto.scrollIntoView ??= () => {}
  window.matchMedia ??= ((query: string) => ({
    matches: false,
    media: query,
    onchange: null,
    addListener() {},
    removeListener() {},
    addEventListener() {},
    removeEventListener() {},
    dispatchEvent: () => false,
  })) as any
}
