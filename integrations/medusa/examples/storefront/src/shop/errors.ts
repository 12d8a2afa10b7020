/** A readable message for a failed Medusa call (the SDK's FetchError, or no answer at all). */
export function storeError(error: unknown, fallback = "Something went wrong. Please try again."): string {
  const status = (error as { status?: unknown })?.status
  if (typeof status !== "number") {
    return "The store is not answering. Check your connection and try again."
  }
  if (status === 401) return "Wrong email or password, or your session has ended."
  const message = error instanceof Error && error.message ? error.message : ""
  return message ? `${fallback.replace(/\.$/, "")}: ${message}` : fallback
}
