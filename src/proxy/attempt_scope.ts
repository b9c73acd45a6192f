/**
 * The signal every attempt of one request shares. It aborts when the service's `timeoutMs`
 * passes (measured from when the gateway received the request) or when the client goes away.
 * `timeoutMs` bounds everything up to the response head; a body that keeps flowing is bounded by
 * `bodyIdleTimeoutMs` in the upstream client instead, so streams are never cut mid-flow.
 *
 * @module
 */
import type { DeadlineScheduler } from "./deadlines.ts";
import { UpstreamError } from "./upstream_client.ts";

/** The reason the scope's signal aborts at the deadline. */
export class DeadlineExceeded extends UpstreamError {
  /**
   * @param clientStalled the request body was waiting on the client when the deadline passed
   * (read at that moment: aborting cancels the body read, which would erase the evidence)
   */
  constructor(readonly clientStalled: boolean) {
    super("timeout", "the service's timeoutMs passed before the response head");
  }
}

/** The deadline and the client's departure, as one signal. */
export interface AttemptScope {
  /** Aborts with {@link DeadlineExceeded} or `UpstreamError("aborted")`. */
  readonly signal: AbortSignal;
  /** Tells the scope how to see whether the request body is waiting on the client. */
  watchBody(waitingOnClient: () => boolean): void;
  /** True when the deadline passed while the request body was waiting on the client. */
  clientStalled(): boolean;
  /** The response head arrived: the deadline no longer applies. */
  disarm(): void;
  /** Disarms and stops listening to the client; idempotent. */
  close(): void;
}

/**
 * Opens the scope of one request.
 *
 * @param clientSignal the client's request signal
 * @param deadlineAtMs when the deadline passes, on the `deadlines` clock
 * @example
 * ```ts
 * const scope = openAttemptScope(request.signal, startedAt + timeoutMs, deadlines);
 * try { await client.send({ ...upstreamRequest, signal: scope.signal }); } finally { scope.close(); }
 * ```
 */
export function openAttemptScope(
  clientSignal: AbortSignal,
  deadlineAtMs: number,
  deadlines: DeadlineScheduler,
): AttemptScope {
  return new Scope(clientSignal, deadlineAtMs, deadlines);
}

const ONCE = { once: true };

/** One object and two callbacks per request (it was seven closures). */
class Scope implements AttemptScope {
  readonly signal: AbortSignal;
  private readonly controller = new AbortController();
  private waitingOnClient: () => boolean = notWaiting;
  private readonly cancelDeadline: () => void;
  private readonly onClientGone = () =>
    this.controller.abort(new UpstreamError("aborted", "the client went away"));

  constructor(
    private readonly clientSignal: AbortSignal,
    deadlineAtMs: number,
    deadlines: DeadlineScheduler,
  ) {
    this.signal = this.controller.signal;
    this.cancelDeadline = deadlines.schedule(
      deadlineAtMs,
      () => this.controller.abort(new DeadlineExceeded(this.waitingOnClient())),
    );
    clientSignal.addEventListener("abort", this.onClientGone, ONCE);
  }

  watchBody(watch: () => boolean): void {
    this.waitingOnClient = watch;
  }

  clientStalled(): boolean {
    const reason = this.signal.reason;
    return reason instanceof DeadlineExceeded && reason.clientStalled;
  }

  disarm(): void {
    this.cancelDeadline();
  }

  close(): void {
    this.cancelDeadline();
    this.clientSignal.removeEventListener("abort", this.onClientGone);
  }
}

const notWaiting = () => false;
