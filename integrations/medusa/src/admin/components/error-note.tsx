import { Alert, Button } from "@medusajs/ui"
import { errorMessage } from "../lib/api"

/** A failed call as a sentence (never a blank widget), with a retry when one makes sense. */
export function ErrorNote({
  error,
  retry,
  testId,
  refusedBy,
  write,
}: {
  error: unknown
  retry?: () => void
  testId?: string
  refusedBy?: string
  /** the failed call would have changed something: say that nothing was */
  write?: boolean
}) {
  return (
    <Alert variant="error" data-testid={testId ?? "dust-error"}>
      <div className="flex items-center justify-between gap-x-4">
        <span role="alert">{errorMessage(error, { refusedBy, write })}</span>
        {retry ? (
          <Button size="small" variant="secondary" onClick={retry}>
            Try again
          </Button>
        ) : null}
      </div>
    </Alert>
  )
}

/** A sentence from the form itself (invalid input), before anything is sent. */
export function FormError({ message }: { message: string }) {
  return (
    <Alert variant="error" data-testid="dust-form-error">
      <span role="alert">{message}</span>
    </Alert>
  )
}
