/**
 * Whose fault is it: the one place that decides where an upstream attempt's outcome came from
 * (as pingora's `ErrorSource` does: upstream, downstream, internal).
 *
 * Only the upstream's own answers and failures (a status, a refused or reset connection, a
 * protocol violation, a timeout while the upstream owed us bytes) may count against its breaker,
 * outlier detection and adaptive limit. With a breaker the whole fleet shares, anything else
 * counted there would let one anonymous client take a service down everywhere.
 *
 * A TLS handshake that fails (the upstream's certificate does not verify against the service's
 * trust, or the upstream refuses the gateway's client certificate) is the upstream's: an
 * `unreachable` attempt, 502 `upstream_unreachable`, counted. No client can cause it, and from
 * the link's side an expired upstream certificate and a client CA the upstream stopped
 * trusting look alike; either way every call fails until an operator acts, which is what an
 * open breaker is for. What the gateway can check alone (files readable, PEM, the key the
 * certificate's) is refused at load and reload, before any call (src/proxy/upstream_tls.ts).
 *
 * @module
 */
import type { AttemptOutcome } from "../breaker/types.ts";
import type { GatewayErrorCode } from "../problem.ts";
import { findClientError } from "./client_error.ts";
import { UpstreamError } from "./upstream_client.ts";

/** Where an outcome came from. */
export type FailureSource = "upstream" | "client" | "gateway";

/** The verdict on one attempt. */
export interface AttemptVerdict {
  /** Who caused it. */
  source: FailureSource;
  /**
   * What the breaker, outlier detection and adaptive limit hear. For `client` and `gateway`
   * this is `{ error: "aborted" }`: no verdict, and a probe slot is handed back unjudged.
   */
  outcome: AttemptOutcome;
  /**
   * The gateway's own answer, or null when the upstream's response is passed on (or nobody is
   * left to answer: the client went away).
   */
  answer: GatewayErrorCode | null;
  /** What happened, in words (for the problem's `detail` and the log). */
  message: string;
}

/** What is known about one finished attempt. */
export interface AttemptFacts {
  /** The upstream's response head, when one came. */
  status: number | null;
  /** What the attempt threw, when no response came. */
  error: unknown;
  /** From sending to the response head or the error, in milliseconds. */
  durationMs: number;
  /** The client's connection went away (its request signal aborted). */
  clientGone: boolean;
  /** The request body was still waiting for the client's next bytes when the attempt ended. */
  waitingOnClient: boolean;
}

/**
 * Statuses that describe the request, not the upstream's health (RFC 9110 §15.6.2, §15.6.6):
 * `501 Not Implemented` is the answer to a method the upstream does not know, which any client
 * can send; `505` to a protocol version, which the gateway chose.
 */
const REQUEST_DESCRIBING_STATUSES = new Set([501, 505]);

/**
 * Decides whose fault an attempt's outcome is.
 *
 * @example
 * ```ts
 * blameAttempt({ status: 503, error: null, durationMs: 3, clientGone: false, waitingOnClient: false });
 * // { source: "upstream", outcome: { status: 503, durationMs: 3 }, answer: null, ... }
 * ```
 */
export function blameAttempt(facts: AttemptFacts): AttemptVerdict {
  const { durationMs } = facts;
  if (facts.status !== null) {
    if (REQUEST_DESCRIBING_STATUSES.has(facts.status)) {
      return noVerdict("client", null, `the upstream answered ${facts.status} to the request`);
    }
    return {
      source: "upstream",
      outcome: { status: facts.status, durationMs },
      answer: null,
      message: `status ${facts.status}`,
    };
  }
  const clientError = findClientError(facts.error);
  if (clientError !== null) return noVerdict("client", clientError.code, clientError.message);
  if (facts.clientGone) return noVerdict("client", null, "the client went away");
  const error = facts.error;
  if (error instanceof UpstreamError) {
    if (error.kind === "aborted") return noVerdict("client", null, "the client went away");
    if (error.kind === "timeout" && facts.waitingOnClient) {
      // The upstream waited for a body the client did not send.
      return noVerdict("client", "request_timeout", "the client stalled its request body");
    }
    return {
      source: "upstream",
      outcome: { error: error.kind, durationMs },
      answer: error.kind === "timeout" ? "upstream_timeout" : "upstream_unreachable",
      message: error.message,
    };
  }
  // Anything else is a defect of the gateway's own: never evidence against the upstream.
  const message = error instanceof Error ? error.message : String(error);
  return noVerdict("gateway", "upstream_unreachable", `gateway error: ${message}`);
}

function noVerdict(
  source: FailureSource,
  answer: GatewayErrorCode | null,
  message: string,
): AttemptVerdict {
  return { source, outcome: { error: "aborted", durationMs: 0 }, answer, message };
}
