/**
 * Errors candlewick throws or rejects with. Every one has a stable `code`:
 * the core's codes (ERR_CANDLEWICK_MODEL, ERR_CANDLEWICK_DEVICE, ERR_CANDLEWICK_TENSOR,
 * ERR_CANDLEWICK_OUT_OF_MEMORY, ERR_CANDLEWICK_DISPOSED, ERR_CANDLEWICK_INTERNAL), ERR_CANDLEWICK_INVALID_OPTION for options
 * rejected before any work, ERR_CANDLEWICK_CANCELLED for aborted calls and
 * ERR_CANDLEWICK_NO_NATIVE_MODULE when the native module cannot be loaded, and the model download's
 * ERR_CANDLEWICK_HUB_NOT_FOUND, ERR_CANDLEWICK_HUB_AUTH, ERR_CANDLEWICK_HUB and ERR_CANDLEWICK_CACHE.
 */

/** Options checked in TypeScript or in Rust were wrong; the message names the option. */
export const INVALID_OPTION = "ERR_CANDLEWICK_INVALID_OPTION";
/** The call was cancelled through its AbortSignal. */
export const CANCELLED = "ERR_CANDLEWICK_CANCELLED";
/** The requested device cannot be used (no CUDA build, no GPU, an old driver). */
export const DEVICE = "ERR_CANDLEWICK_DEVICE";
/** A bug in candlewick: a panic caught in the native code, or a failure inside the binding. */
export const INTERNAL = "ERR_CANDLEWICK_INTERNAL";
/** No native build could be loaded for this platform. */
export const NO_NATIVE_MODULE = "ERR_CANDLEWICK_NO_NATIVE_MODULE";

/** The hub has no such repository, revision or file (HTTP 404, or 401 for a repository it does not show). */
export const HUB_NOT_FOUND = "ERR_CANDLEWICK_HUB_NOT_FOUND";
/** The hub refused the token, or the model is gated or private (HTTP 401, 403). */
export const HUB_AUTH = "ERR_CANDLEWICK_HUB_AUTH";
/** The hub could not be reached or answered badly, or offline mode found no cached copy. */
export const HUB = "ERR_CANDLEWICK_HUB";
/** The model cache could not be written (read-only, full, ...). */
export const CACHE = "ERR_CANDLEWICK_CACHE";

/** The CLI could not write its output (a read-only folder, a full disk, ...). */
export const OUTPUT = "ERR_CANDLEWICK_OUTPUT";

/**
 * An AbortSignal, as candlewick's declarations name it: the members candlewick uses, so that the
 * published types need neither @types/node nor the DOM library. Pass a real AbortSignal
 * (`new AbortController().signal`, `AbortSignal.timeout(ms)`): downloads hand it to `fetch`.
 */
export interface AbortSignalLike {
  readonly aborted: boolean;
  readonly reason?: unknown;
  addEventListener(type: "abort", listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: "abort", listener: () => void): void;
}

/** An error from candlewick, with a machine-readable `code`. */
export class CandlewickError extends Error {
  readonly code: string;

  constructor(message: string, code: string, options?: { cause?: unknown; name?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.name = options?.name ?? "CandlewickError";
  }
}

/** The rejection of an aborted call: `name` "AbortError" (as fetch uses), code ERR_CANDLEWICK_CANCELLED. */
export function abortError(reason: unknown, message = "The generation was aborted"): CandlewickError {
  return new CandlewickError(message, CANCELLED, { cause: reason, name: "AbortError" });
}

/** Wrap an error thrown by the native module (which carries the core's `code`). */
export function fromNativeError(error: unknown): CandlewickError {
  if (error instanceof CandlewickError) return error;
  if (error instanceof Error) {
    const { code } = error as { code?: unknown };
    if (code === CANCELLED) return abortError(error);
    // The core's codes pass through; anything else (a napi status such as "GenericFailure") is a
    // failure inside the binding: ERR_CANDLEWICK_INTERNAL, with the original as `cause`.
    const known = typeof code === "string" && code.startsWith("ERR_CANDLEWICK_");
    return new CandlewickError(error.message, known ? code : INTERNAL, { cause: error });
  }
  return new CandlewickError(String(error), INTERNAL);
}
