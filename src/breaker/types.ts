/**
 * The breaker's public data types: what admission returns, what an attempt's outcome looks like,
 * and what the admin API and metrics read.
 *
 * @module
 */

/**
 * The state of one service's breaker as callers see it.
 *
 * `half_open` is never stored: it is an `open` breaker whose probe time has come.
 */
export type BreakerState = "closed" | "open" | "half_open" | "forced_open" | "forced_closed";

/** Result of a synchronous, memory-only admission check. */
export type Admission =
  | {
    /** The request may go to the upstream. */
    allowed: true;
    /** This request is a half-open trial: its outcome closes or re-opens the breaker. */
    probe: boolean;
    /** The breaker generation the request was admitted in; outcomes of older ones are ignored. */
    generation: number;
  }
  | {
    /** The breaker rejects the request: answer 503 `breaker_open`. */
    allowed: false;
    /** How long until a retry may succeed (for `Retry-After`). */
    retryAfterMs: number;
    /** The state that rejected the request. */
    state: BreakerState;
  };

/** What happened to one upstream attempt. */
export interface AttemptOutcome {
  /** The upstream's HTTP status, when it answered. */
  status?: number;
  /** Why there is no status: network error, our timeout, or the client went away. */
  error?: "unreachable" | "timeout" | "aborted";
  /** Time from sending the request to the response head (or the error). */
  durationMs: number;
}

/** One service's breaker, for `/readyz`, `GET /admin/breakers`, the dashboard and metrics. */
export interface BreakerView {
  /** The service name (key in `services`). */
  service: string;
  /** The state admission decides with right now. */
  state: BreakerState;
  /** Failures counted in the current window (fleet total where known, else this instance's). */
  failuresInWindow: number;
  /** Failures in the window that open the breaker. */
  failureThreshold: number;
  /** When the breaker opened (epoch ms), or null while closed. */
  openedAt: number | null;
  /** When the next half-open probe may run (epoch ms), or null while not open. */
  nextProbeAt: number | null;
  /** Incremented by every stored transition; a new generation counts failures from zero. */
  generation: number;
  /** Opens in the current outage: 1 after a trip, +1 per failed probe, 0 once closed. */
  openCount: number;
  /** True while KV is unavailable or slow and this instance's local breaker is in charge. */
  degraded: boolean;
  /**
   * Other instances known to be sending requests to this service (exchanged about once a
   * second); absent while unknown (no KV, degraded, or not read yet).
   */
  othersSending?: number;
}

/** A state change this instance observed (for metrics and logs). */
export interface TransitionEvent {
  /** The service name. */
  service: string;
  /** The state before. */
  from: BreakerState;
  /** The state after. */
  to: BreakerState;
  /** When this instance observed the change (epoch ms, from the breaker's clock). */
  atMs: number;
}
