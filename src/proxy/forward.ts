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
import type { Balancer, UpstreamEndpoint } from "./balancer.ts";
import { monitorBody, MONITORED_BODY_BYTES } from "./body_limit.ts";
import type { DeadlineScheduler } from "./deadlines.ts";
import {
  type ForwardingContext,
  rewriteResponseHeaders,
  upstreamRequestHeaders,
} from "./headers.ts";
import { type Limiter, LimiterRejectedError, type Release } from "./limiter.ts";
import { type UpstreamClient, UpstreamError, type UpstreamRequest } from "./upstream_client.ts";

/** The breaker's answer to "may this request go upstream?" (see src/breaker). */
export type Admission =
  | { allowed: true; probe: boolean; generation: number }
  | { allowed: false; retryAfterMs: number; state: string };

/** What one upstream attempt came to, as the breaker classifies it. */
export interface AttemptOutcome {
  /** The upstream's status, when it answered. */
  status?: number;
  /** Why there was no answer. `aborted` (the client left, or the gateway gave up) is no failure. */
  error?: "unreachable" | "timeout" | "aborted";
  /** From sending the request to the response head, in milliseconds. */
  durationMs: number;
}

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
    status?: number;
    errorType?: string;
    durationS: number;
  }): void;
  /** A request was answered by the gateway itself. */
  rejected(service: string | null, reason: string): void;
  /** A retry was sent. */
  retry(service: string): void;
}

/** Everything the gateway keeps per service at run time. */
export interface ServiceRuntime {
  /** The service's validated config. */
  config: ServiceConfig;
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
  /** Speaks HTTP to upstreams. */
  client: UpstreamClient;
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
  /** The client's request (method, headers, body, abort signal). */
  raw: Request;
  /** Path to send upstream (already prefix-stripped when configured) plus the query. */
  pathAndQuery: string;
  /** Facts for the forwarding headers. */
  forwarding: ForwardingContext;
  /** When the gateway received it, on `deps.now`'s clock. */
  startedAt: number;
  /**
   * Settles once the response was fully sent (`Deno.ServeHandlerInfo.completed`). With it the
   * upstream's body is handed to the server untouched, which keeps Deno's native streaming
   * path (no chunk passes through JavaScript); without it (embedded use) the body is wrapped
   * to learn when it ends.
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
  constructor() {
    super("timeout", "the service's timeoutMs passed");
  }
}

/**
 * Forwards `request` to `service`. Never throws: every failure becomes a problem response.
 */
export async function forward(
  request: ForwardRequest,
  service: ServiceRuntime,
  deps: ForwardDeps,
): Promise<ForwardResult> {
  const name = service.config.name;
  const raw = request.raw;
  const requestId = request.forwarding.requestId;
  const reject = (code: GatewayErrorCode, detail: string, retryAfterS?: number): ForwardResult => {
    deps.observer.rejected(name, code);
    return {
      response: problemResponse(code, { service: name, detail, requestId, retryAfterS }),
      upstream: null,
      error: code,
    };
  };

  // 1. Body size, declared: refuse before anything is read or any slot taken.
  const declaredLength = raw.headers.get("content-length");
  if (declaredLength !== null && Number(declaredLength) > deps.maxBodyBytes) {
    return reject("body_too_large", `the body is over ${deps.maxBodyBytes} bytes`);
  }

  // 2. Breaker: memory only.
  const admission = deps.breaker.admit(name);
  if (!admission.allowed) {
    return reject(
      "breaker_open",
      `the breaker of "${name}" is ${admission.state}`,
      admission.retryAfterMs / 1000,
    );
  }

  // 3. Connection slots: the service's, then the gateway's.
  let release: Release;
  try {
    release = await acquireBoth(service.limiter, deps.globalLimiter, raw.signal);
  } catch (error) {
    deps.breaker.record(name, admission, { error: "aborted", durationMs: 0 });
    if (error instanceof LimiterRejectedError && error.reason === "aborted") {
      return { response: new Response(null, { status: 499 }), upstream: null, error: undefined };
    }
    return reject("pool_saturated", `"${name}" has no free connection slot`);
  }

  // 4. The deadline covers every attempt and the streaming of the answer.
  const controller = new AbortController();
  const cancelDeadline = deps.deadlines.schedule(
    request.startedAt + service.config.timeoutMs,
    () => controller.abort(new DeadlineExceeded()),
  );
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
    const result = await attemptLoop(request, service, deps, admission, controller.signal);
    if (result.kind === "response") {
      const response = streamResponse(result.response, requestId, finish, request.completed);
      return { response, upstream: result.endpoint.origin };
    }
    finish();
    if (result.kind === "too_large") {
      return reject("body_too_large", `the body is over ${deps.maxBodyBytes} bytes`);
    }
    if (result.kind === "client_broke_body") {
      return reject("bad_request", "the request body ended before its declared end");
    }
    if (result.kind === "client_stalled") {
      return reject("request_timeout", "the client did not send its body within timeoutMs");
    }
    const origin = result.endpoint?.origin ?? null;
    if (result.error === "aborted") {
      // The client is gone; nobody reads this, but the handler must return something.
      return { response: new Response(null, { status: 499 }), upstream: origin };
    }
    const code = result.error === "timeout" ? "upstream_timeout" : "upstream_unreachable";
    const outcome = reject(code, result.message);
    return { ...outcome, upstream: origin };
  } catch (error) {
    finish();
    throw error;
  }
}

type LoopResult =
  | { kind: "response"; response: Response; endpoint: UpstreamEndpoint }
  | { kind: "too_large" }
  | { kind: "client_broke_body" }
  | { kind: "client_stalled" }
  | {
    kind: "failed";
    error: "unreachable" | "timeout" | "aborted";
    message: string;
    endpoint: UpstreamEndpoint | null;
  };

async function attemptLoop(
  request: ForwardRequest,
  service: ServiceRuntime,
  deps: ForwardDeps,
  admission: Admission & { allowed: true },
  signal: AbortSignal,
): Promise<LoopResult> {
  const { config } = service;
  const raw = request.raw;
  const headers = upstreamRequestHeaders(raw.headers, request.forwarding);
  service.retryBudget.recordRequest();

  // Bodies: small ones are buffered when retries are on, so a retry can resend them; the rest
  // stream through a byte counter and are never retried.
  let body: ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | null = raw.body;
  let exceeded = () => false;
  let clientFailed = () => false;
  let waitingOnClient = () => false;
  let nativeBody = false;
  let canRetry = config.retry.attempts > 0 && isRetryableRequest(raw.method, raw.headers) &&
    admission.probe === false;
  if (raw.body !== null) {
    const declared = raw.headers.get("content-length");
    const small = declared !== null && Number(declared) <= config.retry.maxBufferedBodyBytes;
    if (canRetry && small) {
      const buffered = await readWithin(raw, signal);
      if (buffered.kind !== "ok") {
        deps.breaker.record(config.name, admission, { error: "aborted", durationMs: 0 });
        return buffered;
      }
      body = buffered.body;
    } else {
      canRetry = false;
      // Chunked bodies get our cap; declared lengths are enforced by Deno's server. Large
      // declared bodies stream natively (see MONITORED_BODY_BYTES): for them a client that
      // leaves mid-body is told apart by the request's abort signal (checked below).
      if (declared === null || Number(declared) <= MONITORED_BODY_BYTES) {
        const monitored = monitorBody(raw.body, declared === null ? deps.maxBodyBytes : null);
        body = monitored.stream;
        exceeded = monitored.exceeded;
        clientFailed = monitored.clientFailed;
        waitingOnClient = monitored.waitingOnClient;
      } else {
        nativeBody = true;
      }
    }
  }

  let lastEndpoint: UpstreamEndpoint | null = null;
  for (let attempt = 0;; attempt++) {
    const endpoint = service.balancer.pick(lastEndpoint ?? undefined);
    lastEndpoint = endpoint;
    const upstreamRequest: UpstreamRequest = {
      origin: endpoint.origin,
      pathAndQuery: request.pathAndQuery,
      method: raw.method,
      headers,
      body,
      signal,
    };
    const sentAt = deps.now();
    endpoint.inFlight++;
    let response: Response | null = null;
    let failure: UpstreamError | null = null;
    try {
      response = await deps.client.send(upstreamRequest);
    } catch (error) {
      failure = error instanceof UpstreamError
        ? error
        : new UpstreamError("unreachable", String(error), error);
    } finally {
      endpoint.inFlight--;
    }
    const durationMs = deps.now() - sentAt;

    if (failure !== null && exceeded()) {
      // Our own cap cut the body: the caller's fault, not the upstream's.
      deps.breaker.record(config.name, admission, { error: "aborted", durationMs });
      return { kind: "too_large" };
    }
    if (failure !== null && nativeBody && failure.kind === "unreachable") {
      // A broken client body and the client's disconnect race; give the signal a moment.
      await clientGoneWithin(raw.signal, 50);
      if (raw.signal.aborted) clientFailed = () => true;
    }
    if (failure !== null && (clientFailed() || (failure.kind === "timeout" && waitingOnClient()))) {
      // The client broke off or stalled its body: not the upstream's fault either.
      deps.breaker.record(config.name, admission, { error: "aborted", durationMs });
      return clientFailed() ? { kind: "client_broke_body" } : { kind: "client_stalled" };
    }

    const outcome: AttemptOutcome = response !== null
      ? { status: response.status, durationMs }
      : { error: failure!.kind, durationMs };
    // The breaker sees every attempt (issue 3): a retry that hides a failure from the client
    // still cost the upstream a failed call, and that is what the breaker protects it from.
    deps.breaker.record(config.name, admission, outcome);
    service.onAttempt?.(endpoint, outcome);
    deps.observer.clientAttempt({
      service: config.name,
      address: endpoint.address,
      port: endpoint.port,
      status: outcome.status,
      errorType: outcome.error,
      durationS: durationMs / 1000,
    });

    const retryable = canRetry && attempt < config.retry.attempts && !signal.aborted &&
      (response !== null
        ? config.retry.retryOn.includes(response.status)
        : failure!.kind === "unreachable");
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
      if (delayMs < deadlineLeftMs && service.retryBudget.tryAcquireRetry()) {
        await response?.body?.cancel().catch(() => {});
        deps.observer.retry(config.name);
        if (delayMs > 0 && !(await sleep(delayMs, signal))) return failedFrom(signal, endpoint);
        continue;
      }
    }
    if (response !== null) return { kind: "response", response, endpoint };
    return { kind: "failed", error: failure!.kind, message: failure!.message, endpoint };
  }
}

/** Resolves once `signal` aborts or `ms` passed, whichever is first. */
function clientGoneWithin(signal: AbortSignal, ms: number): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

/** Buffers a small body for retries, giving up when the deadline passes or the client leaves. */
async function readWithin(
  raw: Request,
  signal: AbortSignal,
): Promise<
  | { kind: "ok"; body: Uint8Array<ArrayBuffer> }
  | { kind: "client_broke_body" }
  | { kind: "client_stalled" }
> {
  let onAbort = () => {};
  const aborted = new Promise<"aborted">((resolve) => {
    onAbort = () => resolve("aborted");
    if (signal.aborted) resolve("aborted");
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    const result = await Promise.race([raw.arrayBuffer(), aborted]);
    if (result === "aborted") {
      raw.body?.cancel().catch(() => {});
      return { kind: "client_stalled" };
    }
    return { kind: "ok", body: new Uint8Array(result) };
  } catch {
    return { kind: "client_broke_body" };
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

function failedFrom(
  signal: AbortSignal,
  endpoint: UpstreamEndpoint,
): LoopResult & { kind: "failed" } {
  const reason = signal.reason;
  const kind = reason instanceof UpstreamError ? reason.kind : "aborted";
  return { kind: "failed", error: kind, message: String(reason?.message ?? kind), endpoint };
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
