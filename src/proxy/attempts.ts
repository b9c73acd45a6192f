/**
 * The send phase of the request path: attempts to the service's upstreams, retried while the
 * request allows it (idempotent, body replayable, not a probe), the failure is the upstream's
 * and retryable, the deadline leaves room and the retry budget has some.
 *
 * Each attempt is judged once, by {@link blameAttempt}, and the verdict goes to the breaker (every
 * attempt), to the service's health and adaptive limit (only the upstream's verdicts), to
 * tracing and to metrics.
 *
 * @module
 */
import { delay } from "../async/delay.ts";
import type { GatewayRecorders, OperatorRecorders } from "../telemetry/mod.ts";
import {
  type ClientSpanHandle,
  type ServerSpanHandle,
  withTraceHeaders,
} from "../telemetry/tracing.ts";
import { backoffDelayMs, retryAfterMs } from "../retry/policy.ts";
import type { AdmissionTicket } from "./admission.ts";
import type { AttemptScope } from "./attempt_scope.ts";
import type { UpstreamEndpoint } from "./balancer.ts";
import { type AttemptVerdict, blameAttempt } from "./blame.ts";
import type { HeaderPairs } from "./headers.ts";
import type { OutgoingBody } from "./outgoing_body.ts";
import type { ServiceRuntime } from "./service_runtime.ts";

/** Metrics hooks of the request path (a subset of the telemetry module). */
export type ProxyObserver =
  & Pick<GatewayRecorders, "clientAttempt" | "rejected" | "retry">
  & Partial<Pick<OperatorRecorders, "retryRefused">>;

/** One request's attempts: what they send and what they report to. */
export interface Attempts {
  /** The service. */
  service: ServiceRuntime;
  /** The method exactly as the client sent it. */
  method: string;
  /** Path and query to send. */
  pathAndQuery: string;
  /** Headers rewritten for the upstream. */
  headers: HeaderPairs;
  /** Their names and values were checked already (`UpstreamRequest.headersChecked`). */
  headersChecked?: boolean;
  /** The body. */
  body: OutgoingBody;
  /** Retries are allowed for this request (and its body is replayable). */
  canRetry: boolean;
  /** When the gateway received the request, on `now`'s clock. */
  startedAt: number;
  /** The client's request signal. */
  clientSignal: AbortSignal;
  /** The deadline and the client's departure. */
  scope: AttemptScope;
  /** The breaker admission every outcome is recorded on. */
  ticket: AdmissionTicket;
  /** The request's server span, when tracing is on. */
  trace: ServerSpanHandle | null;
  /** Metrics. */
  observer: ProxyObserver;
  /** Monotonic milliseconds. */
  now: () => number;
  /**
   * Epoch milliseconds: a `Retry-After` HTTP date (RFC 9110 §10.2.3) is read against it, as the
   * monotonic `now` has no date.
   */
  wallNow: () => number;
  /** Uniform draw in [0, 1) for jitter. */
  random: () => number;
  /**
   * Passes an upstream's interim responses (`103 Early Hints`) on to the client as they come.
   * One from an attempt that then fails or is retried has gone out already: harmless for hints
   * (RFC 8297 §2: a client may ignore them, the final response is what counts).
   */
  informational?: (status: number, fields: [string, string][]) => boolean;
}

/** What the attempts came to. */
export type SendResult =
  | { kind: "response"; response: Response; endpoint: UpstreamEndpoint }
  | { kind: "failed"; verdict: AttemptVerdict; endpoint: UpstreamEndpoint | null };

/** One finished attempt. */
interface Tried {
  response: Response | null;
  verdict: AttemptVerdict;
}

/**
 * Sends until an answer the client should get, or a failure no retry may fix.
 *
 * @example
 * ```ts
 * const result = await sendWithRetries(attempts);
 * if (result.kind === "response") return streamResponse(result.response, ...);
 * ```
 */
export async function sendWithRetries(attempts: Attempts): Promise<SendResult> {
  const { service, scope } = attempts;
  let lastEndpoint: UpstreamEndpoint | null = null;
  for (let attempt = 0;; attempt++) {
    const endpoint = service.balancer.pick(lastEndpoint ?? undefined);
    lastEndpoint = endpoint;
    const { response, verdict } = await attemptOnce(attempts, endpoint, attempt);
    const delayMs = retryDelayMs(attempts, response, verdict, attempt);
    if (delayMs !== null) {
      await response?.body?.cancel().catch(() => {});
      attempts.observer.retry(service.config.name);
      if (delayMs > 0 && !(await pause(delayMs, scope.signal))) {
        return { kind: "failed", verdict: verdictOfAbort(scope.signal), endpoint };
      }
      continue;
    }
    if (response !== null && verdict.answer === null) {
      return { kind: "response", response, endpoint };
    }
    await response?.body?.cancel().catch(() => {});
    return { kind: "failed", verdict, endpoint };
  }
}

/** Sends one attempt to `endpoint`, judges it and reports the verdict. */
async function attemptOnce(attempts: Attempts, endpoint: UpstreamEndpoint, attempt: number) {
  const { service, scope } = attempts;
  // One client span per attempt; the upstream gets exactly one traceparent: this span's.
  const span = attempts.trace?.startClient({
    method: attempts.method,
    origin: endpoint.origin,
    address: endpoint.address,
    port: endpoint.port,
    path: attempts.pathAndQuery,
    resendCount: attempt,
  });
  const sentAt = attempts.now();
  const clientWaitBeforeMs = attempts.body.clientWaitMs();
  endpoint.inFlight++;
  let response: Response | null = null;
  let thrown: unknown = null;
  try {
    response = await service.client.send({
      origin: endpoint.origin,
      pathAndQuery: attempts.pathAndQuery,
      method: attempts.method,
      headers: withTraceHeaders(attempts.headers, span),
      headersChecked: attempts.headersChecked,
      body: attempts.body.body,
      signal: scope.signal,
      bodyIdleTimeoutMs: service.config.bodyIdleTimeoutMs,
      maxDecodedBodyBytes: service.config.maxDecodedBodyBytes,
      onInformational: attempts.informational,
      // A body that fails on the upstream's side after the head is a late failure of this
      // attempt: an upstream that answers heads and then stalls its bodies must still trip.
      onBodyFailure: (error) => {
        const outcome = { error: error.kind, durationMs: attempts.now() - sentAt };
        attempts.ticket.record(outcome);
        service.onAttempt(endpoint, outcome);
      },
    });
  } catch (error) {
    thrown = error;
  } finally {
    endpoint.inFlight--;
  }
  const durationMs = attempts.now() - sentAt;
  // The upstream's own latency: time spent waiting for the client's body is not the upstream's
  // (or a client trickling its body could make it look slow: slowCallMs, the adaptive limit).
  const clientWaitMs = attempts.body.clientWaitMs() - clientWaitBeforeMs;
  const verdict = blameAttempt({
    status: response?.status ?? null,
    error: response === null ? (attempts.body.clientError() ?? thrown) : null,
    durationMs: Math.max(0, durationMs - clientWaitMs),
    clientGone: attempts.clientSignal.aborted,
    waitingOnClient: attempts.body.waitingOnClient() || scope.clientStalled(),
  });
  report(attempts, endpoint, span, { response, verdict }, durationMs);
  return { response, verdict } satisfies Tried;
}

/** Tells the breaker, the service's health, tracing and metrics about one attempt. */
function report(
  attempts: Attempts,
  endpoint: UpstreamEndpoint,
  span: ClientSpanHandle | undefined,
  { response, verdict }: Tried,
  durationMs: number,
): void {
  attempts.ticket.record(verdict.outcome);
  if (verdict.source === "upstream") attempts.service.onAttempt(endpoint, verdict.outcome);
  // error.type: the upstream's failure kind, or what the client did (no upstream verdict).
  const errorType = response === null
    ? (verdict.source === "upstream" ? verdict.outcome.error : verdict.answer ?? "client_gone")
    : undefined;
  span?.end({ status: response?.status, errorType });
  attempts.observer.clientAttempt({
    service: attempts.service.config.name,
    address: endpoint.address,
    port: endpoint.port,
    method: attempts.method,
    status: response?.status,
    errorType,
    durationS: durationMs / 1000,
  });
}

/**
 * How long to wait before retrying, or null for no retry: the request must allow retries,
 * the failure be the upstream's and retryable (a `retryOn` status, or unreachable), the wait
 * (backoff, or a longer `Retry-After`) end before the deadline, and the budget have a retry.
 */
function retryDelayMs(
  attempts: Attempts,
  response: Response | null,
  verdict: AttemptVerdict,
  attempt: number,
): number | null {
  const { config, retryBudget } = attempts.service;
  const retryable = attempts.canRetry && verdict.source === "upstream" &&
    attempt < config.retry.attempts && !attempts.scope.signal.aborted &&
    (response !== null
      ? config.retry.retryOn.includes(response.status)
      : verdict.outcome.error === "unreachable");
  if (!retryable) return null;
  const retryAfter = response !== null
    ? retryAfterMs(response.headers.get("retry-after"), attempts.wallNow())
    : null;
  const delayMs = Math.max(
    retryAfter ?? 0,
    backoffDelayMs(attempt, config.retry.baseDelayMs, config.retry.maxDelayMs, attempts.random()),
  );
  const deadlineLeftMs = config.timeoutMs - (attempts.now() - attempts.startedAt);
  // Never retry past the deadline, and never beyond the budget.
  const inTime = delayMs < deadlineLeftMs;
  if (inTime && retryBudget.tryAcquireRetry()) return delayMs;
  attempts.observer.retryRefused?.(config.name, inTime ? "budget" : "deadline");
  return null;
}

/** Waits `ms`; false when the signal aborted first. */
async function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  try {
    await delay(ms, { signal });
    return true;
  } catch {
    return false;
  }
}

function verdictOfAbort(signal: AbortSignal): AttemptVerdict {
  return blameAttempt({
    status: null,
    error: signal.reason,
    durationMs: 0,
    clientGone: false,
    waitingOnClient: false,
  });
}
