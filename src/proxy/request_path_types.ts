/**
 * The request path's interface: what it is given per request and per gateway, and what it
 * reports when a request is done (`./request_path.ts` is the path itself).
 *
 * @module
 */
import type { GatewayErrorCode } from "../problem.ts";
import type { EscapedSlashes } from "../routing/normalize_path.ts";
import type { RouteMatcher } from "../routing/route_table.ts";
import type { OperatorRecorders } from "../telemetry/operator_metrics.ts";
import type { GatewayTracing, ServerSpanHandle } from "../telemetry/tracing.ts";
import type { AdmissionControl } from "./admission.ts";
import type { ProxyObserver } from "./attempts.ts";
import type { DeadlineScheduler } from "./deadlines.ts";
import type { Limiter } from "./limiter.ts";
import type { ServiceRuntime } from "./service_runtime.ts";
import type { SessionSummary, TakeOver } from "./websocket.ts";
import type { WebSocketSessions } from "./websocket_sessions.ts";

/**
 * What the server knows about a request beyond the `Request` (the gateway's own server passes
 * all of it; `Deno.serve` passes `remoteAddr` and `completed`).
 */
export interface ConnectionFacts {
  /** The peer. */
  remoteAddr?: Deno.NetAddr;
  /** Settles when the response was fully written (or the connection died). */
  completed?: Promise<void>;
  /** The request target exactly as sent; the path is taken from it, never from `Host`. */
  target?: string;
  /** The method exactly as sent (a `Request` normalises some and refuses others). */
  method?: string;
  /** The body exactly as sent (a `Request` refuses one on GET and HEAD). */
  body?: ReadableStream<Uint8Array> | null;
  /** The server can hand the connection over after this request (the gateway's own server). */
  takeOver?: TakeOver;
  /**
   * Writes an interim response (`103 Early Hints`) to the client before the final one; false
   * when it may not. The gateway's own server offers it on HTTP/1.1 only.
   */
  sendInformational?: (status: number, fields: [string, string][]) => boolean;
  /** How the client reached the gateway (`X-Forwarded-Proto`); else read from the url. */
  scheme?: "http" | "https";
}

/**
 * What the request path reads of the client's request: a fetch `Request` fits; the gateway's
 * own server hands over a lighter object with the same members (no `Request` is built).
 */
export type RawRequest = Pick<Request, "headers" | "signal" | "url" | "method" | "body">;

/** A request as the public app hands it over. */
export interface IncomingRequest {
  /**
   * The client's request: headers and abort signal; the method, url and body only where
   * `facts` has none.
   */
  raw: RawRequest;
  /** The gateway's `X-Request-Id` for it. */
  requestId: string;
  /** What the server knows beyond the `Request`. */
  facts?: ConnectionFacts;
}

/** One finished request, for the record phase. */
export interface ServedRequest {
  /** The method as received. */
  method: string;
  /** `http` or `https`, as the client spoke to the gateway. */
  scheme: string;
  /** The normalised path that was routed; empty when routing never got that far. */
  path: string;
  /** The owning service, or null. */
  service: ServiceRuntime | null;
  /** The status sent. */
  status: number;
  /** From receiving to the response head, in milliseconds. */
  durationMs: number;
  /** The origin of the last attempt, or null when none was made. */
  upstream: string | null;
  /** The request id. */
  requestId: string;
  /** The gateway's own error code, when it answered itself. */
  error?: GatewayErrorCode;
  /** The `x-breakwater-fallback` value, when the service's fallback answered (`./fallback.ts`). */
  fallback?: string;
  /** What an upgraded (WebSocket) session did; the request is recorded when it ended. */
  websocket?: SessionSummary;
  /** The request's server span, when tracing is on. */
  span: ServerSpanHandle | null;
}

/** The parts the request path works with. */
export interface RequestPathDeps {
  /** Finds the service that owns a path. */
  match: RouteMatcher<ServiceRuntime>;
  /** `defaults.escapedSlashes`: for a path no service owns before it is decoded. */
  escapedSlashes: EscapedSlashes;
  /** `limits.maxBodyBytes`. */
  maxBodyBytes: number;
  /** The fleet breaker. */
  breaker: AdmissionControl;
  /** The gateway-wide in-flight cap. */
  globalLimiter: Limiter;
  /** Request deadlines, on the `now` clock. */
  deadlines: DeadlineScheduler;
  /** Monotonic milliseconds. */
  now: () => number;
  /** Epoch milliseconds, for `Retry-After` dates (RFC 9110 §10.2.3). Default `Date.now`. */
  wallNow?: () => number;
  /** Uniform draw in [0, 1) for jitter. */
  random: () => number;
  /** True once the gateway is shutting down: new requests are answered 503 `draining`. */
  draining: () => boolean;
  /** Metrics of refusals, attempts, retries and fallbacks. */
  observer: ProxyObserver & Partial<Pick<OperatorRecorders, "fallback">>;
  /**
   * Finds a service's runtime by name, for a fallback to another service (`./fallback.ts`);
   * without it, a service fallback is not taken (503 `breaker_open`).
   */
  serviceByName?: (name: string) => ServiceRuntime | undefined;
  /** Opens each request's server span (null when tracing is off). */
  tracing: Pick<GatewayTracing, "startServer" | "enabled">;
  /** Open WebSocket sessions per service; without it, `Upgrade: websocket` is not proxied. */
  websockets?: WebSocketSessions;
  /** The record phase's sink: traffic, metrics, the access log. */
  onServed: (served: ServedRequest) => void;
}

/** The request path of a gateway. */
export interface RequestPath {
  /** Takes one request through every phase; resolves with the response to send. */
  handle(request: IncomingRequest): Promise<Response>;
  /** Requests between routing and the response head right now. */
  inFlight(): number;
}
