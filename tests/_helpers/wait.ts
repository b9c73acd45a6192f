/**
 * Bounded waiting for tests: every wait ends, with the condition met or with an error that says
 * what was waited for. A broken gateway then fails the suite in bounded time instead of hanging
 * it (`deno test` has no per-test timeout).
 *
 * Fetches in tests are bounded with `AbortSignal.timeout(ms)` (WHATWG DOM standard), which
 * aborts the body as well as the head.
 *
 * @module
 */

/** Options of {@link waitFor}. */
export interface WaitOptions {
  /** Give up after this long. Default 5000. */
  timeoutMs?: number;
  /** Pause between checks. Default 5. */
  intervalMs?: number;
  /** What is waited for, for the error. Default: the condition's source text. */
  what?: string;
}

/** Thrown by {@link waitFor} and {@link within} when time ran out. */
export class WaitTimeoutError extends Error {
  /** @param message names what was waited for and how long */
  constructor(message: string) {
    super(message);
    this.name = "WaitTimeoutError";
  }
}

/**
 * Checks `condition` every `intervalMs` until it holds; throws {@link WaitTimeoutError} naming
 * `what` after `timeoutMs`. An async check that itself hangs is cut off at the deadline too. A
 * check that throws fails the wait at once (an assertion inside a condition is a failure, not a
 * reason to keep polling).
 *
 * @example
 * ```ts
 * await waitFor(() => upstream.requests.length >= 1, { timeoutMs: 2000 });
 * await waitFor(async () => (await readyz()).status === "ready", { what: "readyz ready" });
 * ```
 */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  options: WaitOptions = {},
): Promise<void> {
  const timeoutMs = options.timeoutMs ?? 5000;
  const intervalMs = options.intervalMs ?? 5;
  const what = options.what ?? describe(condition);
  const deadline = performance.now() + timeoutMs;
  while (true) {
    const remainingMs = deadline - performance.now();
    if (remainingMs <= 0) break;
    const met = await within(Promise.resolve().then(condition), remainingMs, what).catch(
      (error) => {
        if (error instanceof WaitTimeoutError) return false;
        throw error;
      },
    );
    if (met) return;
    const pauseMs = Math.min(intervalMs, deadline - performance.now());
    if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
  }
  throw new WaitTimeoutError(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/**
 * Settles like `promise`, or rejects with {@link WaitTimeoutError} naming `what` after
 * `timeoutMs`. The timer is always cleared (no leak for the test sanitizers); the promise itself
 * is not cancelled, so bound the work behind it too where it holds resources.
 *
 * @example
 * ```ts
 * const response = await within(pendingFetch, 3000, "the queued request's answer");
 * ```
 */
export function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new WaitTimeoutError(`timed out after ${Math.round(timeoutMs)} ms: ${what}`)),
      timeoutMs,
    );
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

/** Something a test must close: a gateway, an upstream, a listener. */
export interface Closable {
  /** Closes it. */
  close(): Promise<void> | void;
}

/**
 * Closes everything in order, each within `timeoutMs`, and throws if any did not close in time.
 * One that hangs does not stop the rest: a gateway still waiting on a hung upstream finishes
 * once that upstream is closed, so whatever timed out gets a second, bounded chance at the end.
 * Null entries (never started) are skipped.
 *
 * @example
 * ```ts
 * try { ... } finally { await closeAll({ gateway: gw, upstream }); }
 * ```
 */
export async function closeAll(
  closables: Record<string, Closable | null | undefined>,
  timeoutMs = 5000,
): Promise<void> {
  const late: { name: string; closing: Promise<void> }[] = [];
  for (const [name, closable] of Object.entries(closables)) {
    if (closable === null || closable === undefined) continue;
    const closing = Promise.resolve().then(() => closable.close());
    try {
      await within(closing, timeoutMs, `closing ${name}`);
    } catch (error) {
      if (!(error instanceof WaitTimeoutError)) throw error;
      late.push({ name, closing: closing.catch(() => {}) });
    }
  }
  if (late.length === 0) return;
  await within(Promise.all(late.map(({ closing }) => closing)), timeoutMs, "late closes")
    .catch(() => {});
  const names = late.map(({ name }) => name).join(", ");
  throw new WaitTimeoutError(`did not close within ${timeoutMs} ms: ${names}`);
}

function describe(condition: () => unknown): string {
  const source = condition.toString().replace(/\s+/g, " ").trim();
  return source.length > 200 ? `${source.slice(0, 197)}...` : source;
}

/** How long a test fetch may take by default before it counts as a hang. */
export const FETCH_TIMEOUT_MS = 5000;

/**
 * `init` with a time limit on the whole exchange (head and body), for `fetch` in tests.
 *
 * @example
 * ```ts
 * const response = await fetch(`${gw.url}/s`, bounded({ method: "POST", body: "x" }));
 * ```
 */
export function bounded(init: RequestInit = {}, timeoutMs = FETCH_TIMEOUT_MS): RequestInit {
  const limit = AbortSignal.timeout(timeoutMs);
  return { ...init, signal: init.signal ? AbortSignal.any([init.signal, limit]) : limit };
}
