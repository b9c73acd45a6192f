/**
 * One health prober per instance, however many workers. The main thread's own health checks and
 * every worker's go through one table of results per upstream and path: a probe younger than
 * 90% of `healthCheck.intervalMs` is answered from it, an older one is sent again (once, however
 * many ask at the same time). So the upstream sees about one probe per interval from the
 * instance, and each thread's health state still counts `healthyThreshold` and
 * `unhealthyThreshold` over its own readings.
 *
 * @module
 */
import type { ServiceConfig } from "../config/schema.ts";
import type { HealthProbe } from "../gateway/build_service.ts";
import type { FromWorker } from "./protocol.ts";

/** A result is reused while younger than this share of the interval. */
export const REUSE_SHARE = 0.9;

/** The main thread's table of probe results. */
export interface SharedProber {
  /** Wraps a service's own probe (for the main thread's gateway: `probeThrough`). */
  through(probe: HealthProbe, service: ServiceConfig): HealthProbe;
  /**
   * A worker's probe: the shared result if fresh, else one real probe through the main
   * thread's client for that upstream; rejects when the main thread probes no such upstream.
   */
  probe(
    service: string,
    origin: string,
    path: string,
    intervalMs: number,
    timeoutMs: number,
  ): Promise<number>;
}

interface Entry {
  atMs: number;
  result: Promise<number>;
}

/** Rejects with the signal's reason once it aborts; otherwise settles as `promise` does. */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/**
 * Creates the table.
 *
 * @example
 * ```ts
 * const prober = createSharedProber();
 * createGateway(config, { probeThrough: prober.through }); // the main thread's
 * // a worker asked: prober.probe(origin, "/health", 5000, 1000)
 * ```
 */
export function createSharedProber(options: { now?: () => number } = {}): SharedProber {
  const now = options.now ?? (() => performance.now());
  const senders = new Map<string, HealthProbe>();
  const results = new Map<string, Entry>();
  // Per service too: two services with one upstream origin may reach it with different TLS
  // settings (README, "Upstream TLS"), so neither may take the other's result.
  const keyOf = (service: string, origin: string, path: string) => `${service} ${origin} ${path}`;

  const shared = (
    key: string,
    send: HealthProbe,
    origin: string,
    path: string,
    intervalMs: number,
    timeoutMs: number,
  ): Promise<number> => {
    const cached = results.get(key);
    if (cached !== undefined && now() - cached.atMs < intervalMs * REUSE_SHARE) {
      return cached.result;
    }
    // Its own time limit: one asker going away must not cut the probe short for the others.
    const result = send(origin, path, AbortSignal.timeout(timeoutMs));
    result.catch(() => {}); // read by the askers; an unread failure is not an error
    results.set(key, { atMs: now(), result });
    return result;
  };

  return {
    through(probe, service) {
      if (service.healthCheck === null) return probe;
      const { intervalMs, timeoutMs, path: checked } = service.healthCheck;
      // Known before the first probe, so a worker that asks first is answered too.
      for (const origin of service.upstreams) {
        senders.set(keyOf(service.name, new URL(origin).origin, checked), probe);
      }
      return (origin, path, signal) => {
        const key = keyOf(service.name, origin, path);
        senders.set(key, probe);
        return abortable(shared(key, probe, origin, path, intervalMs, timeoutMs), signal);
      };
    },
    probe(service, origin, path, intervalMs, timeoutMs) {
      const key = keyOf(service, origin, path);
      const send = senders.get(key);
      if (send === undefined) {
        return Promise.reject(
          new Error(`the main thread probes no ${origin}${path} for service ${service}`),
        );
      }
      return shared(key, send, origin, path, intervalMs, timeoutMs);
    },
  };
}

/** A worker's side: its probes are asked of the main thread. */
export interface ProbeClient {
  /** For the worker's gateway: `probeThrough`. */
  through(probe: HealthProbe, service: ServiceConfig): HealthProbe;
  /** An answer from the main thread. */
  answer(id: number, status: number | null, error: string | null): void;
}

/**
 * Creates a worker's probe client over `post`.
 *
 * @example
 * ```ts
 * const probes = createProbeClient((message) => self.postMessage(message));
 * createGateway(config, { probeThrough: probes.through });
 * ```
 */
export function createProbeClient(
  post: (message: Extract<FromWorker, { type: "health-probe" }>) => void,
): ProbeClient {
  const waiting = new Map<number, { resolve(status: number): void; reject(error: Error): void }>();
  let nextId = 1;
  return {
    through(probe, service) {
      if (service.healthCheck === null) return probe;
      const { intervalMs, timeoutMs } = service.healthCheck;
      return (origin, path, signal) => {
        const id = nextId++;
        const asked = new Promise<number>((resolve, reject) => {
          waiting.set(id, { resolve, reject });
          post({
            type: "health-probe",
            id,
            service: service.name,
            origin,
            path,
            intervalMs,
            timeoutMs,
          });
        });
        return abortable(asked, signal).finally(() => waiting.delete(id));
      };
    },
    answer(id, status, error) {
      const asker = waiting.get(id);
      if (asker === undefined) return;
      waiting.delete(id);
      if (status !== null) asker.resolve(status);
      else asker.reject(new Error(error ?? "health probe failed"));
    },
  };
}
