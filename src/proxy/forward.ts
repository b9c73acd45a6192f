/**
 * Forwards one request to the service that owns it: breaker admission, pool admission, the
 * attempt loop with retries inside the deadline, and the streamed response.
 *
 * @module
 */
import type { ServiceConfig } from "../config/schema.ts";
import { problemResponse } from "../problem.ts";
import type { GatewayErrorCode } from "../problem.ts";
import {
  backoffDelayMs,
  isRetryableRequest,
  retryAfterMs,
  type RetryBudget,
} from "../retry/policy.ts";
import type { Admission, AttemptOutcome } from "../breaker/types.ts";
import type { Balancer, UpstreamEndpoint } from "./balancer.ts";
import { type AttemptVerdict, blameAttempt } from "./blame.ts";
import { watchRequestBody } from "./body_limit.ts";
import { type ServerSpanHandle, withTraceHeaders } from "../telemetry/tracing.ts";
import { ClientError } from "./client_error.ts";
import type { DeadlineScheduler } from "./deadlines.ts";
import {
  type ForwardingContext,
  rewriteResponseHeaders,
  upstreamRequestHeaders,
} from "./headers.ts";
import { type Limiter, LimiterRejectedError, type Release } from "./limiter.ts";
import { type UpstreamClient, UpstreamError, type UpstreamRequest } from "./upstream_client.ts";

export type { Admission, AttemptOutcome };

/** The breaker as the request path sees it: synchronous and memory-only. */
export interface AdmissionControl {
  /** May a request go to `service` now? */
  admit(service: string): Admission;
  /** The outcome of an admitted attempt; never blocks the caller. */
  record(
    service: string,
    admission: Admission & { allowed: true },
    outcome: AttemptOutcome,
  ): void;
}

/** Metrics hooks of the request path (a subset of the telemetry module). */
export interface ProxyObserver {
  /** One upstream attempt finished (answered or failed). */
  clientAttempt(attempt: {
    service: string;
    address: string;
    port: number;
    method?: string;
    status?: number;
    errorType?: string;
    durationS: number;
  }): void;
  /** A request was answered by the gateway itself. */
  rejected(service: string | null, reason: string): void;
  /** A retry was sent. */
  retry(service: string): void;
  /** A retry was wanted but refused: the budget was spent, or the deadline too close. */
  retryRefused?(service: string, reason: "budget" | "deadline"): void;
}

/** Everything the gateway keeps per service at run time. */
export interface ServiceRuntime {
  /** The service's validated config. */
  config: ServiceConfig;
  /** Speaks HTTP to this service's upstreams (its `upstreamClient`, its own pools). */
  client: UpstreamClient;
  /** Spreads attempts over the upstreams. */
  balancer: Balancer;
  /** Bounds concurrent upstream requests of this service. */
  limiter: Limiter;
  /** Caps retries to a share of recent traffic. */
  retryBudget: RetryBudget;
  /** Called with each attempt's outcome per upstream (outlier detection, adaptive limits). */
  onAttempt?: (endpoint: UpstreamEndpoint, outcome: AttemptOutcome) => void;
}

/** Shared parts of the request path. */
export interface ForwardDeps {
  /** The fleet breaker. */
  breaker: AdmissionControl;
  /** The gateway-wide in-flight cap. */
  globalLimiter: Limiter;
  /** Metrics. */
  observer: ProxyObserver;
  /** `limits.maxBodyBytes`. */
  maxBodyBytes: number;
  /** Monotonic milliseconds (default `performance.now`). */
  now: () => number;
  /** Request deadlines, on the `now` clock. */
  deadlines: DeadlineScheduler;
  /** Uniform draw in [0, 1) for jitter (default `Math.random`). */
  random: () => number;
}

/** The request, reduced to what forwarding needs. */
export interface ForwardRequest {
  /** The client's request (headers and abort signal). */
  raw: Request;
  /** The method exactly as the client sent it (`Request.method` may have normalised it). */
  method: string;
  /** The body exactly as the client sent it (also for GET/HEAD), or null. */
  body: ReadableStream<Uint8Array> | null;
  /** Path to send upstream (already prefix-stripped when configured) plus the query. */
  pathAndQuery: string;
  /** Facts for the forwarding headers. */
  forwarding: ForwardingContext;
  /** When the gateway received it, on `deps.now`'s clock. */
  startedAt: number;
  /** The request's server span, when tracing is on: each attempt gets a client span under it. */
  trace?: ServerSpanHandle | null;
  /**
   * Settles once the response was fully sent (`ServeInfo.completed`). With it the upstream's
   * body is handed to the server untouched; without it (embedded use) the body is wrapped to
   * learn when it ends.
   */
  completed?: Promise<void>;
}

/** What forwarding came to: the response and facts for the access log. */
export interface ForwardResult {
  /** The response to send to the client. */
  response: Response;
  /** The origin of the last attempt, or null when none was made. */
  upstream: string | null;
  /** Set when the gateway answered itself. */
  error?: GatewayErrorCode;
}

class DeadlineExceeded extends UpstreamError {
  /**
   * @param clientStalled the request body was waiting on the client when the deadline passed
   * (read at that moment: aborting cancels the body read, which would erase the evidence)
   */
  constructor(readonly clientStalled: boolean) {
    super("timeout", "the service's timeoutMs passed before the response head");
  }
}

/** A response to a client that is gone: nobody reads it, but a handler must return one. */
function clientGoneResult(upstream: string | null): ForwardResult {
  return { response: new Response(null, { status: 499 }), upstream };
}

/**
 * Forwards `request` to `service` in named phases: admit (breaker) -> acquire (connection
 * slots) -> send (attempts, retries inside the deadline) -> respond (stream the answer back).
 * Whose fault each outcome is, is decided once, by {@link blameAttempt}. Never throws: every
 * failure becomes a problem response.
 */
export async function forward(
  request: ForwardRequest,
  service: ServiceRuntime,
  deps: ForwardDeps,
): Promise<ForwardResult> {
  const name = service.config.name;
  const requestId = request.forwarding.requestId;
  const reject = (code: GatewayErrorCode, detail: string, retryAfterS?: number): ForwardResult => {
    deps.observer.rejected(name, code);
    return {
      response: problemResponse(code, { service: name, detail, requestId, retryAfterS }),
      upstream: null,
      error: code,
    };
  };

  // Admit: the breaker, memory only.
  const admission = deps.breaker.admit(name);
  if (!admission.allowed) {
    return reject(
      "breaker_open",
      `the breaker of "${name}" is ${admission.state}`,
      admission.retryAfterMs / 1000,
    );
  }

  // Acquire: the service's connection slot, then the gateway's. A request that never reached
  // the upstream hands a probe slot back unjudged.
  let release: Release;
  try {
    release = await acquireBoth(service.limiter, deps.globalLimiter, request.raw.signal);
  } catch (error) {
    deps.breaker.record(name, admission, NO_VERDICT);
    if (error instanceof LimiterRejectedError && error.reason === "aborted") {
      return clientGoneResult(null);
    }
    return reject("pool_saturated", `"${name}" has no free connection slot`);
  }

  // Send: `timeoutMs` bounds everything up to the response head; a body that keeps flowing is
  // bounded by `bodyIdleTimeoutMs` in the client instead, so streams are never cut mid-flow.
  const controller = new AbortController();
  const clientSide = { waitingOnClient: () => false };
  const cancelDeadline = deps.deadlines.schedule(
    request.startedAt + service.config.timeoutMs,
    () => controller.abort(new DeadlineExceeded(clientSide.waitingOnClient())),
  );
  const raw = request.raw;
  const onClientGone = () => controller.abort(new UpstreamError("aborted", "the client went away"));
  raw.signal.addEventListener("abort", onClientGone, { once: true });
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    cancelDeadline();
    raw.signal.removeEventListener("abort", onClientGone);
    release();
  };

  try {
    const result = await attemptLoop(
      request,
      service,
      deps,
      admission,
      controller.signal,
      clientSide,
    );
    cancelDeadline();
    // Respond: stream the upstream's answer, or make the gateway's own.
    if (result.kind === "response") {
      const response = streamResponse(result.response, requestId, finish, request.completed);
      return { response, upstream: result.endpoint.origin };
    }
    finish();
    const origin = result.endpoint?.origin ?? null;
    if (result.verdict.answer === null) return clientGoneResult(origin);
    return { ...reject(result.verdict.answer, result.verdict.message), upstream: origin };
  } catch (error) {
    finish();
    throw error;
  }
}

/** What the breaker hears of a request that says nothing about the upstream. */
const NO_VERDICT: AttemptOutcome = { error: "aborted", durationMs: 0 };

type LoopResult =
  | { kind: "response"; response: Response; endpoint: UpstreamEndpoint }
  | { kind: "failed"; verdict: AttemptVerdict; endpoint: UpstreamEndpoint | null };

/** The request body as the attempts send it, and what is known of the client's side. */
interface PreparedBody {
  body: ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | null;
  /** A buffered body can be sent again. */
  replayable: boolean;
  waitingOnClient: () => boolean;
  clientError: () => ClientError | null;
}

/**
 * Small bodies are buffered when a retry could resend them; the rest stream through
 * {@link watchRequestBody} (cap for bodies of undeclared length, client faults, backpressure).
 */
async function prepareBody(
  request: ForwardRequest,
  deps: ForwardDeps,
  bufferUpToBytes: number | null,
  signal: AbortSignal,
): Promise<PreparedBody | AttemptVerdict> {
  const notWaiting = () => false;
  const noError = () => null;
  const fixed = { replayable: true, waitingOnClient: notWaiting, clientError: noError };
  if (request.body === null) return { body: null, ...fixed };
  const declared = request.raw.headers.get("content-length");
  const declaredBytes = declared === null ? null : Number(declared);
  if (declaredBytes === 0) {
    request.body.cancel().catch(() => {});
    return { body: new Uint8Array(0), ...fixed };
  }
  if (bufferUpToBytes !== null && declaredBytes !== null && declaredBytes <= bufferUpToBytes) {
    const buffered = await readWithin(request.body, signal);
    if (buffered instanceof Uint8Array) {
      return { body: buffered as Uint8Array<ArrayBuffer>, ...fixed };
    }
    return blameAttempt({
      status: null,
      error: buffered,
      durationMs: 0,
      clientGone: request.raw.signal.aborted,
      waitingOnClient: true,
    });
  }
  const watched = watchRequestBody(request.body, declaredBytes === null ? deps.maxBodyBytes : null);
  return {
    body: watched.stream,
    replayable: false,
    waitingOnClient: watched.waitingOnClient,
    clientError: watched.clientError,
  };
}

async function attemptLoop(
  request: ForwardRequest,
  service: ServiceRuntime,
  deps: ForwardDeps,
  admission: Admission & { allowed: true },
  signal: AbortSignal,
  clientSide: { waitingOnClient: () => boolean },
): Promise<LoopResult> {
  const { config } = service;
  const raw = request.raw;
  const headers = upstreamRequestHeaders(raw.headers, request.forwarding);
  service.retryBudget.recordRequest();

  const wantsRetries = config.retry.attempts > 0 &&
    isRetryableRequest(request.method, raw.headers) && admission.probe === false;
  const prepared = await prepareBody(
    request,
    deps,
    wantsRetries ? config.retry.maxBufferedBodyBytes : null,
    signal,
  );
  if (!("body" in prepared)) {
    deps.breaker.record(config.name, admission, prepared.outcome);
    return { kind: "failed", verdict: prepared, endpoint: null };
  }
  const canRetry = wantsRetries && prepared.replayable;
  clientSide.waitingOnClient = prepared.waitingOnClient;

  let lastEndpoint: UpstreamEndpoint | null = null;
  for (let attempt = 0;; attempt++) {
    const endpoint = service.balancer.pick(lastEndpoint ?? undefined);
    lastEndpoint = endpoint;
    // One client span per attempt; the upstream gets exactly one traceparent: this span's.
    const attemptSpan = request.trace?.startClient({
      method: request.method,
      origin: endpoint.origin,
      address: endpoint.address,
      port: endpoint.port,
      path: request.pathAndQuery,
      resendCount: attempt,
    });
    const upstreamRequest: UpstreamRequest = {
      origin: endpoint.origin,
      pathAndQuery: request.pathAndQuery,
      method: request.method,
      headers: withTraceHeaders(headers, attemptSpan),
      body: prepared.body,
      signal,
      bodyIdleTimeoutMs: config.bodyIdleTimeoutMs,
    };
    const sentAt = deps.now();
    endpoint.inFlight++;
    let response: Response | null = null;
    let thrown: unknown = null;
    try {
      response = await service.client.send(upstreamRequest);
    } catch (error) {
      thrown = error;
    } finally {
      endpoint.inFlight--;
    }
    const durationMs = deps.now() - sentAt;
    const verdict = blameAttempt({
      status: response?.status ?? null,
      error: response === null ? (prepared.clientError() ?? thrown) : null,
      durationMs,
      clientGone: raw.signal.aborted,
      waitingOnClient: prepared.waitingOnClient() ||
        (signal.reason instanceof DeadlineExceeded && signal.reason.clientStalled),
    });

    // The breaker sees every attempt: a retry that hides a failure from the client still cost
    // the upstream a failed call, and that is what the breaker protects it from.
    deps.breaker.record(config.name, admission, verdict.outcome);
    if (verdict.source === "upstream") service.onAttempt?.(endpoint, verdict.outcome);
    // error.type: the upstream's failure kind, or what the client did (no upstream verdict).
    const errorType = response === null
      ? (verdict.source === "upstream" ? verdict.outcome.error : verdict.answer ?? "client_gone")
      : undefined;
    attemptSpan?.end({ status: response?.status, errorType });
    deps.observer.clientAttempt({
      service: config.name,
      address: endpoint.address,
      port: endpoint.port,
      method: request.method,
      status: response?.status,
      errorType,
      durationS: durationMs / 1000,
    });

    const retryable = canRetry && verdict.source === "upstream" &&
      attempt < config.retry.attempts && !signal.aborted &&
      (response !== null
        ? config.retry.retryOn.includes(response.status)
        : verdict.outcome.error === "unreachable");
    if (retryable) {
      const retryAfter = response !== null
        ? retryAfterMs(response.headers.get("retry-after"), Date.now())
        : null;
      const delayMs = Math.max(
        retryAfter ?? 0,
        backoffDelayMs(attempt, config.retry.baseDelayMs, config.retry.maxDelayMs, deps.random()),
      );
      const deadlineLeftMs = config.timeoutMs - (deps.now() - request.startedAt);
      // Never retry past the deadline, and never beyond the budget.
      const inTime = delayMs < deadlineLeftMs;
      const allowed = inTime && service.retryBudget.tryAcquireRetry();
      if (!allowed) deps.observer.retryRefused?.(config.name, inTime ? "budget" : "deadline");
      if (allowed) {
        await response?.body?.cancel().catch(() => {});
        deps.observer.retry(config.name);
        if (delayMs > 0 && !(await sleep(delayMs, signal))) {
          return { kind: "failed", verdict: verdictOfAbort(signal), endpoint };
        }
        continue;
      }
    }
    if (response !== null && verdict.answer === null) {
      return { kind: "response", response, endpoint };
    }
    await response?.body?.cancel().catch(() => {});
    return { kind: "failed", verdict, endpoint };
  }
}

/** Buffers a small body for retries; the client's failure or the deadline ends it. */
async function readWithin(
  body: ReadableStream<Uint8Array>,
  signal: AbortSignal,
): Promise<Uint8Array<ArrayBuffer> | unknown> {
  let onAbort = () => {};
  const aborted = new Promise<"aborted">((resolve) => {
    onAbort = () => resolve("aborted");
    if (signal.aborted) resolve("aborted");
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    const result = await Promise.race([new Response(body).arrayBuffer(), aborted]);
    if (result === "aborted") {
      body.cancel().catch(() => {});
      return signal.reason;
    }
    return new Uint8Array(result);
  } catch (error) {
    return error instanceof ClientError
      ? error
      : new ClientError("bad_request", "the request body was broken off", error);
  } finally {
    signal.removeEventListener("abort", onAbort);
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

function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false);
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

async function acquireBoth(
  serviceLimiter: Limiter,
  globalLimiter: Limiter,
  signal: AbortSignal,
): Promise<Release> {
  const serviceSlot = serviceLimiter.acquire(signal);
  const releaseService = serviceSlot instanceof Promise ? await serviceSlot : serviceSlot;
  try {
    const globalSlot = globalLimiter.acquire(signal);
    const releaseGlobal = globalSlot instanceof Promise ? await globalSlot : globalSlot;
    return () => {
      releaseGlobal();
      releaseService();
    };
  } catch (error) {
    releaseService();
    throw error;
  }
}

/**
 * The upstream's response, re-headed for the client; `finish` runs once its body was sent to
 * the end, failed, or was abandoned by the client: the connection slot is held for as long
 * as the upstream connection is busy.
 */
function streamResponse(
  upstream: Response,
  requestId: string,
  finish: () => void,
  completed: Promise<void> | undefined,
): Response {
  const init = {
    status: upstream.status,
    statusText: upstream.statusText,
    headers: upstream.headers,
  };
  const source = upstream.body;
  if (source === null) {
    finish();
    return rehead(new Response(null, init), requestId);
  }
  if (completed !== undefined) {
    // Measured: 100 MiB through a JS pull wrapper raised RSS by ~25-75 MiB (every chunk
    // becomes a JS buffer awaiting GC); handed over untouched it stayed flat.
    completed.then(finish, finish);
    return rehead(new Response(source, init), requestId);
  }
  const reader = source.getReader();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (done) {
          finish();
          controller.close();
        } else {
          controller.enqueue(value);
        }
      } catch (error) {
        finish();
        controller.error(error);
      }
    },
    cancel(reason) {
      finish();
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
  return rehead(new Response(body, init), requestId);
}

function rehead(response: Response, requestId: string): Response {
  rewriteResponseHeaders(response.headers, requestId);
  return response;
}
