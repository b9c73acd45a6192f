/**
 * The messages between the gateway's main thread and its workers (`postMessage`, structured
 * clone). Plain data only: a worker and the main thread share nothing else.
 *
 * @module
 */
import type { TrafficTally } from "../admin/traffic_stats.ts";
import type { AttemptOutcome, BreakerState, BreakerView } from "../breaker/types.ts";
import type { GatewayConfig } from "../config/schema.ts";
import type { PoolUsage } from "../gateway/status.ts";

/**
 * What a worker answers for a service until the next publication: the main thread decides it
 * from the instance's one real breaker, a worker only reads it.
 */
export type MirrorDecision =
  /** Closed (or forced closed): every request passes, in this breaker generation. */
  | { kind: "pass"; generation: number }
  /**
   * Refused with `state` (`open`, `forced_open`, or `half_open` while a failure is being
   * counted). `probeAtMs` (epoch ms): from then on a worker asks for a probe without waiting
   * for the next publication; null: refused until told otherwise.
   */
  | { kind: "reject"; state: BreakerState; retryAfterMs: number; probeAtMs: number | null }
  /** Half-open: only a request holding a probe granted by the main thread passes. */
  | { kind: "probe" };

/** One service's breaker as published to the workers. */
export interface MirrorEntry {
  /** The service name. */
  service: string;
  /** What admission answers. */
  decision: MirrorDecision;
  /** The real breaker's view (for `/readyz`, the access log). */
  view: BreakerView;
}

/** Main thread -> worker. */
export type ToWorker =
  | {
    type: "start";
    /** 0-based worker index (in logs and `service.instance.id`). */
    index: number;
    /** The instance's id; the worker's telemetry resource is `<id>-w<index>`. */
    instanceId: string;
    /** This worker's share of the config (see share.ts). */
    config: GatewayConfig;
    /** The port to bind (0 for the first worker of a `port: 0` config). */
    port: number;
    env: Record<string, string | undefined>;
    /** Honour `crash` messages (tests only). */
    testHooks: boolean;
  }
  | { type: "breakers"; entries: MirrorEntry[]; degraded: boolean }
  | { type: "probe"; service: string; token: number; generation: number }
  | { type: "reload"; config: GatewayConfig }
  | { type: "metrics"; id: number }
  /**
   * Answered with `synced` once everything sent before it is in force in the worker (messages
   * between two threads arrive in order; a reload before it has finished).
   */
  | { type: "sync"; id: number }
  | { type: "drain"; drainDelayMs: number; timeoutMs: number }
  | { type: "health-result"; id: number; status: number | null; error: string | null }
  | { type: "crash" };

/**
 * Per-service traffic of one stats period, tallied in the worker: a few numbers per service
 * whatever the request rate, added to the dashboard's traffic in one step each.
 */
export type TrafficBatch = Record<string, TrafficTally>;

/** Worker -> main thread. */
export type FromWorker =
  | { type: "listening"; hostname: string; port: number }
  | { type: "start-failed"; message: string }
  | { type: "failure"; service: string; generation: number; outcome: AttemptOutcome }
  | { type: "want-probe"; service: string }
  | { type: "probe-result"; token: number; outcome: AttemptOutcome }
  | {
    type: "stats";
    traffic: TrafficBatch;
    pools: Record<string, PoolUsage>;
    /** Services this worker sent requests to since the last stats (fleet activity). */
    busy: string[];
    inFlight: number;
  }
  | { type: "metrics"; id: number; text: string | null }
  | { type: "synced"; id: number }
  | { type: "reloaded"; ok: boolean; message?: string }
  | {
    type: "health-probe";
    id: number;
    /** The service whose check it is: two services may probe one origin differently (TLS). */
    service: string;
    origin: string;
    path: string;
    intervalMs: number;
    timeoutMs: number;
  }
  | { type: "drained"; clean: boolean };

/** How often a worker sends its stats (traffic, pools, activity): the freshness of them. */
export const STATS_INTERVAL_MS = 1000;
