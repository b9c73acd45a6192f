/**
 * The answers the server makes itself (a request it could not parse, a head that came too
 * slowly, a handler that threw): RFC 9457 problem details shaped like the gateway's own
 * (`src/problem.ts`), with the code in `x-breakwater-error`. The status is the server's to pick
 * (431 and 505 carry the `bad_request` code), which is why this is not `problemResponse`.
 *
 * @module
 */

/** The `x-breakwater-error` codes the server answers with. */
export type ServerErrorCode =
  | "bad_request"
  | "request_timeout"
  | "method_not_allowed"
  | "body_too_large"
  | "internal_error";

const TITLES: Record<number, string> = {
  400: "The request could not be parsed",
  405: "This method is not forwarded",
  408: "The request did not arrive in time",
  413: "The request body is too large",
  431: "The request head is too large",
  500: "The request could not be handled",
  505: "This HTTP version is not supported",
};

/**
 * A problem response: `application/problem+json` body `{type,title,status,code,detail}`.
 *
 * @example
 * ```ts
 * const res = serverProblem(431, "bad_request", "request head over 65536 bytes");
 * res.headers.get("x-breakwater-error"); // "bad_request"
 * ```
 */
export function serverProblem(status: number, code: ServerErrorCode, detail: string): Response {
  const body = JSON.stringify({
    type: `https://breakwater.dev/errors/${code}`,
    title: TITLES[status] ?? "The request failed",
    status,
    code,
    detail,
  });
  return new Response(body, {
    status,
    headers: {
      "content-type": "application/problem+json",
      "x-breakwater-error": code,
      "cache-control": "no-store",
    },
  });
}
