/**
 * What the forms check before asking Dust: a whole positive amount and a reason. Each
 * returns the value or a sentence a person can act on.
 */
export type Checked<T> = { ok: true; value: T } | { ok: false; error: string }

/** A whole positive amount typed by a person ("250", " 250 "); `what` names it in errors. */
export function wholeAmount(text: string, what = "Amount"): Checked<number> {
  const trimmed = text.trim()
  if (trimmed === "") {
    return { ok: false, error: `${what} is required.` }
  }
  if (/^-/.test(trimmed)) {
    return { ok: false, error: `${what} must be positive: ${trimmed} is negative.` }
  }
  if (/^\d+[.,]\d*$/.test(trimmed) && !/^\d+[.,]0*$/.test(trimmed)) {
    return { ok: false, error: `${what} must be a whole number: ${trimmed} has a fraction.` }
  }
  if (!/^\d+([.,]0*)?$/.test(trimmed)) {
    return { ok: false, error: `${what} must be a whole number, like 250.` }
  }
  const value = Number(trimmed.replace(/[.,]0*$/, ""))
  if (!Number.isSafeInteger(value)) {
    return { ok: false, error: `${what} is too large.` }
  }
  if (value < 1) {
    return { ok: false, error: `${what} must be at least 1.` }
  }
  return { ok: true, value }
}

/** A reason Dust keeps with the entry: 1 to 2000 characters once trimmed. */
export function reasonText(text: string): Checked<string> {
  const trimmed = text.trim()
  if (trimmed === "") {
    return { ok: false, error: "A reason is required: it is kept with the entry." }
  }
  if (trimmed.length > 2000) {
    return { ok: false, error: `The reason is too long: ${trimmed.length} characters, at most 2000.` }
  }
  return { ok: true, value: trimmed }
}
