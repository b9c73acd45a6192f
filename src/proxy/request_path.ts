/**
 * The request path, phase by phase (as pingora's `ProxyHttp` names them):
 *
 * 1. **receive**: the clock starts, the server span opens;
 * 2. **route**: the edge checks, then the service that owns the request target;
 * 3. **admit**: the service's breaker, from memory ({@link admissionTicket});
 * 4. **acquire**: a connection slot of the service, then one of the gateway;
 * 5. **send**: the body prepared, attempts and retries inside the deadline ({@link sendWithRetries});
 * 6. **respond**: the upstream's answer streamed back, or the gateway's own answer: every refusal
 *    becomes a problem response here and nowhere else;
 * 7. **record**: the span ends, metrics, traffic and the access log hear of the request.
 *
 * Whose fault an outcome is, is decided once, by `blameAttempt` (`./blame.ts`).
 *
 * @module
 */
import { type GatewayErrorCode, problemResponse } from "../problem.ts";
import { isRetryableRequest } from "../retry/policy.ts";
import { targetOfUrl } from "../routing/request_target.ts";
import { resolveRoute, type Routed, type Unroutable } from "../routing/resolve_route.ts";
import type { ServerSpanHandle } from "../telemetry/tracing.ts";
import { type AdmissionTicket, admissionTicket } from "./admission.ts";
import { type AttemptScope, openAttemptScope } from "./attempt_scope.ts";
import { type ProxyObserver, type SendResult, sendWithRetries } from "./attempts.ts";
import { checkDeclaredLength, checkRequest } from "./edge_checks.ts";
import {
  type FallbackPlan,
  markFallback,
  planFallback,
  staticFallbackResponse,
} from "./fallback.ts";
import { upstreamRequestHeaders } from "./headers.ts";
import { acquireBoth, LimiterRejectedError, type Release } from "./limiter.ts";
import { NO_BODY, prepareBody } from "./outgoing_body.ts";
import type {
  ConnectionFacts,
  IncomingRequest,
  RawRequest,
  RequestPath,
  RequestPathDeps,
  ServedRequest,
} from "./request_path_types.ts";
import type { ServiceRuntime } from "./service_runtime.ts";
import { streamResponse } from "./stream_response.ts";
import { proxyWebSocket, type SessionSummary, type TakeOver, wantsWebSocket } from "./websocket.ts";

export type {
  ConnectionFacts,
  IncomingRequest,
  ProxyObserver,
  RawRequest,
  RequestPath,
  RequestPathDeps,
  ServedRequest,
};

/**
 * Creates the request path.
 *
 * @example
 * ```ts
 * const path = createRequestPath(deps);
 * app.all("*", (c) => path.handle({ raw: c.req.raw, requestId: c.get("requestId"), facts: c.env }));
 * ```
 */
export function createRequestPath(deps: RequestPathDeps): RequestPath {
  const counter = { inFlight: 0 };
  return {
    async handle(request) {
      const exchange = receive(request, deps);
      const passed = pass(exchange, deps);
      let outcome: Outcome;
      if (passed instanceof Promise) {
        // A routed request: in flight until it has its outcome.
        counter.inFlight++;
        try {
          outcome = await passed;
        } finally {
          counter.inFlight--;
        }
      } else {
        outcome = passed;
      }
      if (outcome.kind === "upgraded") return upgraded(exchange, outcome, deps);
      const response = respond(exchange, outcome, deps);
      // Only the own server (it hands over the target) writes a response's pairs as they are.
      if (exchange.fallback !== null) {
        markFallback(response, exchange.fallback, exchange.strictlyParsed);
      }
      record(exchange, outcome, response, deps);
      return response;
    },
    inFlight: () => counter.inFlight,
  };
}

/** One request on its way through the phases. */
interface Exchange {
  raw: RawRequest;
  requestId: string;
  method: string;
  scheme: string;
  /** The request target as sent (origin-form). */
  target: string;
  /** Parsed by the gateway's own server (which hands over the target): edge checks done. */
  strictlyParsed: boolean;
  body: ReadableStream<Uint8Array> | null;
  clientIp: string | null;
  completed: Promise<void> | undefined;
  /** The server can hand the connection over (for a WebSocket upgrade). */
  takeOver: TakeOver | undefined;
  /** The server can send the client an interim response (HTTP/1.1 on the own server). */
  sendInformational: ConnectionFacts["sendInformational"];
  startedAt: number;
  span: ServerSpanHandle | null;
  service: ServiceRuntime | null;
  path: string;
  /** The `x-breakwater-fallback` value once the service's fallback took the request. */
  fallback: string | null;
}

/** How a request ended, before it became a response. */
type Outcome =
  | { kind: "upgraded"; upstream: string; ended: Promise<SessionSummary>; response?: Response }
  | { kind: "forwarded"; response: Response; upstream: string; finish: () => void }
  | { kind: "refused"; refusal: Refusal; upstream: string | null }
  | { kind: "client_gone"; upstream: string | null }
  | { kind: "fallback"; response: Response; upstream: null };

/** An answer the gateway makes itself. */
interface Refusal {
  code: GatewayErrorCode;
  detail: string;
  service: string | null;
  retryAfterS?: number;
}

function refused(refusal: Refusal, upstream: string | null = null): Outcome {
  return { kind: "refused", refusal, upstream };
}

/** Phase 1: the clock starts and the server span opens. */
function receive(request: IncomingRequest, deps: RequestPathDeps): Exchange {
  const startedAt = deps.now();
  const { raw, requestId, facts } = request;
  const method = facts?.method ?? raw.method;
  // The TLS port says so itself: its HTTP/1.1 requests carry an http:// url (RFC 9112 §3.2.2:
  // the scheme is the connection's, not the client's to claim).
  const scheme = facts?.scheme ?? (raw.url.startsWith("https:") ? "https" : "http");
  const target = facts?.target ?? targetOfUrl(raw.url);
  const clientIp = facts?.remoteAddr?.hostname ?? null;
  // Tracing off: no span arguments are built at all (the common case on the hot path). The
  // query is cut and `Host` read only for a sampled request, by the tracing.
  const span = !deps.tracing.enabled ? null : deps.tracing.startServer({
    method,
    headers: raw.headers,
    scheme,
    path: target,
    clientAddress: clientIp,
    requestId,
  });
  return {
    raw,
    requestId,
    method,
    scheme,
    target,
    strictlyParsed: facts?.target !== undefined,
    body: facts?.body !== undefined ? facts.body : raw.body,
    clientIp,
    completed: facts?.completed,
    takeOver: facts?.takeOver,
    sendInformational: facts?.sendInformational,
    startedAt,
    span,
    service: null,
    path: "",
    fallback: null,
  };
}

/**
 * Phases 2 to 5: everything between receiving a request and answering it; a refusal before
 * routing synchronously, a routed request as a promise (one async step fewer than an async
 * function around it).
 */
function pass(exchange: Exchange, deps: RequestPathDeps): Outcome | Promise<Outcome> {
  if (deps.draining()) {
    return refused({ code: "draining", detail: "the gateway is shutting down", service: null });
  }
  const routed = route(exchange, deps);
  if ("code" in routed) return refused(routed);
  const service = routed.target;
  exchange.service = service;
  exchange.path = routed.path;
  exchange.span?.setRoute(service.config.name, service.config.prefix);
  return forward(exchange, routed, deps);
}

/** Phase 2: the edge checks, then the owner of the request target (never of `Host`). */
function route(
  exchange: Exchange,
  deps: RequestPathDeps,
): Routed<ServiceRuntime> | Unroutable | Refusal {
  // A request from the gateway's own server (it hands over the target) was parsed strictly
  // already: method, Host and framing need no second look, only the gateway's body cap.
  const refusal = exchange.strictlyParsed
    ? checkDeclaredLength(exchange.raw.headers, deps.maxBodyBytes)
    : checkRequest(exchange.method, exchange.raw.headers, deps.maxBodyBytes);
  if (refusal !== null) return { code: refusal.code, detail: refusal.message, service: null };
  return resolveRoute(exchange.target, exchange.method, deps.match, deps.escapedSlashes);
}

/** Phases 3 to 5 for a routed request. */
async function forward(
  exchange: Exchange,
  routed: Routed<ServiceRuntime>,
  deps: RequestPathDeps,
): Promise<Outcome> {
  const service = routed.target;
  const name = service.config.name;
  const admission = deps.breaker.admit(name);
  if (!admission.allowed) {
    // One hop: a request already on its fallback gets that service's own answer.
    const fallback = exchange.fallback === null ? planFallback(routed, deps.serviceByName) : null;
    if (fallback !== null) return await takeFallback(exchange, fallback, deps);
    const detail = `the breaker of "${name}" is ${admission.state}`;
    return refused({
      code: "breaker_open",
      detail,
      service: name,
      retryAfterS: admission.retryAfterMs / 1000,
    });
  }
  // Settled on every way out: a request that never reached the upstream hands a probe back.
  using ticket = admissionTicket(deps.breaker, name, admission);
  if (
    deps.websockets !== undefined && service.config.websocket.enabled &&
    wantsWebSocket(exchange.raw.headers) &&
    // Upgradable: the own server hands the connection over (HTTP/1.1, no body), or, embedded
    // on Deno.serve, a fetch Request for Deno.upgradeWebSocket. A request the own server parsed
    // without offering the connection (HTTP/1.0: no Upgrade there, RFC 9110 §7.8) goes on as an
    // ordinary request, even as a fetch Request (Deno.upgradeWebSocket does not refuse those).
    (exchange.takeOver !== undefined ||
      (!exchange.strictlyParsed && exchange.raw instanceof Request))
  ) {
    return await proxyWebSocket({
      ...exchange,
      service,
      pathAndQuery: routed.pathAndQuery,
      takeOver: exchange.takeOver,
      ticket,
      sessions: deps.websockets,
      deadlines: deps.deadlines,
      observer: deps.observer,
      now: deps.now,
    });
  }
  const slot = acquire(service, deps, exchange.raw.signal);
  const release = typeof slot === "function" ? slot : await slot;
  if (typeof release !== "function") return release;

  const scope = openAttemptScope(
    exchange.raw.signal,
    exchange.startedAt + service.config.timeoutMs,
    deps.deadlines,
  );
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    scope.close();
    release();
  };
  try {
    const result = await send(exchange, routed, ticket, scope, deps);
    scope.disarm();
    if (result.kind === "response") {
      return {
        kind: "forwarded",
        response: result.response,
        upstream: result.endpoint.origin,
        finish,
      };
    }
    finish();
    const upstream = result.endpoint?.origin ?? null;
    const { answer, message } = result.verdict;
    if (answer === null) return { kind: "client_gone", upstream };
    return refused({ code: answer, detail: message, service: name }, upstream);
  } catch (error) {
    finish();
    throw error;
  }
}

/**
 * Phases 3 to 6 of the fallback, instead of 503 `breaker_open` (`./fallback.ts`): the static
 * answer, or the request forwarded to the fallback service under its own policy. The refusing
 * breaker hears nothing of it.
 */
async function takeFallback(
  exchange: Exchange,
  plan: FallbackPlan,
  deps: RequestPathDeps,
): Promise<Outcome> {
  exchange.fallback = plan.label;
  deps.observer.fallback?.(exchange.service!.config.name, plan.kind);
  if (plan.kind === "service") return await forward(exchange, plan.routed, deps);
  const response = staticFallbackResponse(plan.answer, exchange.requestId);
  return { kind: "fallback", response, upstream: null };
}

/**
 * Phase 4: the service's connection slot, then the gateway's; synchronously while both have
 * a free one (no promise step on the usual path).
 */
function acquire(
  service: ServiceRuntime,
  deps: RequestPathDeps,
  signal: AbortSignal,
): Release | Promise<Release | Outcome> {
  const slot = acquireBoth(service.limiter, deps.globalLimiter, signal);
  if (typeof slot === "function") return slot;
  return slot.catch((error) => {
    if (error instanceof LimiterRejectedError && error.reason === "aborted") {
      return { kind: "client_gone", upstream: null };
    }
    const name = service.config.name;
    return refused({
      code: "pool_saturated",
      detail: `"${name}" has no free connection slot`,
      service: name,
    });
  });
}

/** Phase 5: the body prepared, then the attempts. */
async function send(
  exchange: Exchange,
  routed: Routed<ServiceRuntime>,
  ticket: AdmissionTicket,
  scope: AttemptScope,
  deps: RequestPathDeps,
): Promise<SendResult> {
  const service = routed.target;
  const { config } = service;
  const { raw } = exchange;
  const headers = upstreamRequestHeaders(raw.headers, {
    clientIp: exchange.clientIp,
    proto: exchange.scheme,
    host: raw.headers.get("host"),
    requestId: exchange.requestId,
  });
  service.retryBudget.recordRequest();
  const wantsRetries = config.retry.attempts > 0 &&
    isRetryableRequest(exchange.method, raw.headers) && !ticket.probe;
  // No body (most requests): nothing to prepare, no promise step.
  const body = exchange.body === null ? NO_BODY : await prepareBody(
    {
      body: exchange.body,
      declaredLength: raw.headers.get("content-length"),
      clientSignal: raw.signal,
    },
    deps.maxBodyBytes,
    wantsRetries ? config.retry.maxBufferedBodyBytes : null,
    scope.signal,
  );
  if (!("body" in body)) return { kind: "failed", verdict: body, endpoint: null };
  scope.watchBody(body.waitingOnClient);
  return await sendWithRetries({
    service,
    method: exchange.method,
    pathAndQuery: routed.pathAndQuery,
    headers,
    // The own server's parser checked the client's fields (RFC 9112); the forwarding headers
    // are made of those: the upstream client need not check them again.
    headersChecked: exchange.strictlyParsed,
    body,
    canRetry: wantsRetries && body.replayable,
    startedAt: exchange.startedAt,
    clientSignal: raw.signal,
    scope,
    ticket,
    trace: exchange.span,
    observer: deps.observer,
    now: deps.now,
    wallNow: deps.wallNow ?? Date.now,
    random: deps.random,
    informational: exchange.sendInformational,
  });
}

/**
 * An upgraded request: the server takes the connection over once this returns (it ignores
 * the response), or, embedded on `Deno.serve`, the response is `Deno.upgradeWebSocket`'s; the
 * request is recorded when the session ends, with status 101 and the session's duration.
 */
function upgraded(
  exchange: Exchange,
  outcome: Outcome & { kind: "upgraded" },
  deps: RequestPathDeps,
): Response {
  outcome.ended.then((summary) => record(exchange, outcome, { status: 101 }, deps, summary))
    // Nothing awaits this: a failure here must not become an unhandled rejection (which ends
    // the process), only a log line.
    .catch((error) => console.error("breakwater: recording a WebSocket session failed", error));
  return outcome.response ?? new Response(null);
}

/** Phase 6: the upstream's answer streamed back, or the gateway's own. */
function respond(exchange: Exchange, outcome: Outcome, deps: RequestPathDeps): Response {
  switch (outcome.kind) {
    case "upgraded":
      return new Response(null);
    case "forwarded":
      return streamResponse(
        outcome.response,
        exchange.requestId,
        outcome.finish,
        exchange.completed,
        // Only the own server hands over the target, and only it writes the http1 client's
        // pairs as they are.
        exchange.strictlyParsed,
      );
    case "fallback":
      return outcome.response;
    case "client_gone":
      // Nobody reads it, but a handler must return one; 499 is what the access log shows.
      return new Response(null, { status: 499 });
    case "refused": {
      const { code, detail, service, retryAfterS } = outcome.refusal;
      deps.observer.rejected(service, code);
      if (code !== "draining") {
        return problemResponse(code, {
          requestId: exchange.requestId,
          detail,
          service,
          retryAfterS,
        });
      }
      const response = problemResponse(code, {
        requestId: exchange.requestId,
        detail,
        retryAfterS: 1,
      });
      response.headers.set("connection", "close");
      return response;
    }
  }
}

/** Phase 7: the span ends; traffic, metrics and the access log hear of the request. */
function record(
  exchange: Exchange,
  outcome: Outcome,
  response: Pick<Response, "status">,
  deps: RequestPathDeps,
  websocket?: SessionSummary,
): void {
  const error = outcome.kind === "refused" ? outcome.refusal.code : undefined;
  const durationMs = deps.now() - exchange.startedAt;
  const fallback = exchange.fallback ?? undefined;
  exchange.span?.end({ status: response.status, errorType: error, fallback });
  deps.onServed({
    method: exchange.method,
    scheme: exchange.scheme,
    path: exchange.path,
    service: exchange.service,
    status: response.status,
    durationMs,
    upstream: outcome.upstream,
    requestId: exchange.requestId,
    error,
    fallback,
    websocket,
    span: exchange.span,
  });
}
