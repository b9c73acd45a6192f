/**
 * Responses the gateway makes itself: RFC 9457 problem details with an `x-breakwater-error`
 * header whose value is one of the codes the README lists ("Endpoints and errors").
 *
 * @module
 */

/** The machine-readable reasons the gateway answers a request itself. */
export type GatewayErrorCode =
  | "no_route"
  | "breaker_open"
  | "pool_saturated"
  | "upstream_unreachable"
  | "upstream_timeout"
  | "body_too_large"
  | "bad_request"
  | "request_timeout"
  | "method_not_allowed"
  | "draining"
  | "internal_error";

/** The HTTP status and human title of each gateway error code. */
export const GATEWAY_ERRORS: Readonly<Record<GatewayErrorCode, { status: number; title: string }>> =
  {
    no_route: { status: 404, title: "No service owns this path" },
    breaker_open: { status: 503, title: "The service's circuit breaker is open" },
    pool_saturated: { status: 503, title: "Too many requests are waiting for this service" },
    upstream_unreachable: { status: 502, title: "The upstream could not be reached" },
    upstream_timeout: { status: 504, title: "The upstream did not answer in time" },
    body_too_large: { status: 413, title: "The request body is too large" },
    bad_request: { status: 400, title: "The request is malformed or was broken off" },
    request_timeout: { status: 408, title: "The request did not arrive in time" },
    method_not_allowed: { status: 405, title: "The gateway does not forward this method" },
    draining: { status: 503, title: "The gateway is shutting down" },
    internal_error: { status: 500, title: "The gateway failed to handle the request" },
  };

/** Extra facts for a problem response. */
export interface ProblemOptions {
  /** Which service the request was for, when known. */
  service?: string | null;
  /** A sentence about this occurrence. */
  detail?: string;
  /** The request id, echoed so a caller can quote it. */
  requestId?: string;
  /** Seconds to put in `Retry-After` (rounded up, at least 1). */
  retryAfterS?: number;
  /**
   * Another status for the code's meaning, where HTTP has a more precise one (the server
   * answers a too-large head 431 and an unsupported version 505, both `bad_request`).
   */
  status?: number;
}

/**
 * Builds the gateway's own error response.
 *
 * @example
 * ```ts
 * const res = problemResponse("no_route", { detail: "GET /nope" });
 * res.status; // 404
 * res.headers.get("x-breakwater-error"); // "no_route"
 * ```
 */
export function problemResponse(code: GatewayErrorCode, options: ProblemOptions = {}): Response {
  const { title } = GATEWAY_ERRORS[code];
  const status = options.status ?? GATEWAY_ERRORS[code].status;
  const body: Record<string, unknown> = {
    type: `https://breakwater.dev/errors/${code}`,
    title,
    status,
    code,
  };
  if (options.detail) body.detail = options.detail;
  if (options.service) body.service = options.service;
  if (options.requestId) body.requestId = options.requestId;
  const headers = new Headers({
    "content-type": "application/problem+json",
    "x-breakwater-error": code,
    "cache-control": "no-store",
  });
  if (options.retryAfterS !== undefined) {
    headers.set("retry-after", String(Math.max(1, Math.ceil(options.retryAfterS))));
  }
  if (options.requestId) headers.set("x-request-id", options.requestId);
  return new Response(JSON.stringify(body), { status, headers });
}
