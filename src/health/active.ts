/**
 * Active health checks: every `intervalMs` each upstream's health path is probed with
 * `timeoutMs`; `unhealthyThreshold` failures in a row take it out of rotation and
 * `healthyThreshold` successes in a row bring it back. The threshold logic is pure
 * ({@link createHealthState}); {@link startHealthChecks} runs the probes on unref'd timers.
 *
 * @module
 */

/** Thresholds of {@link createHealthState}. */
export interface HealthThresholds {
  /** Successes in a row that make an unhealthy upstream healthy. */
  healthyThreshold: number;
  /** Failures in a row that make a healthy upstream unhealthy. */
  unhealthyThreshold: number;
}

/** The health of one upstream as probes see it. */
export interface HealthState {
  /** Records one probe's result; returns true when `healthy` flipped. */
  record(ok: boolean): boolean;
  /** Healthy now (upstreams start healthy, so start-up does not wait for a probe). */
  readonly healthy: boolean;
  /** Probe results in a row that agree with each other. */
  readonly streak: number;
}

/**
 * Creates the threshold state machine of one upstream.
 *
 * @example
 * ```ts
 * const state = createHealthState({ healthyThreshold: 2, unhealthyThreshold: 2 });
 * state.record(false); state.record(false); // true: now unhealthy
 * ```
 */
export function createHealthState(thresholds: HealthThresholds): HealthState {
  let healthy = true;
  let successes = 0;
  let failures = 0;
  return {
    record(ok) {
      if (ok) {
        successes++;
        failures = 0;
        if (!healthy && successes >= thresholds.healthyThreshold) {
          healthy = true;
          return true;
        }
      } else {
        failures++;
        successes = 0;
        if (healthy && failures >= thresholds.unhealthyThreshold) {
          healthy = false;
          return true;
        }
      }
      return false;
    },
    get healthy() {
      return healthy;
    },
    get streak() {
      return Math.max(successes, failures);
    },
  };
}

/** Options of {@link startHealthChecks}. */
export interface HealthCheckOptions extends HealthThresholds {
  /** The origins to probe. */
  origins: readonly string[];
  /** Path (and query) probed on each origin. */
  path: string;
  /** Time between probes of one origin, in milliseconds. */
  intervalMs: number;
  /** Longest wait for a probe's answer, in milliseconds. */
  timeoutMs: number;
  /**
   * Sends one probe; resolves with the status, or rejects when no answer came. Its signal
   * aborts at `timeoutMs` and on stop.
   */
  probe: (origin: string, path: string, signal: AbortSignal) => Promise<number>;
  /** Called when an origin's health flipped. */
  onChange: (index: number, healthy: boolean) => void;
}

/** Running health checks. */
export interface HealthChecks {
  /** The state of origin `index`. */
  state(index: number): HealthState;
  /** Stops every timer and aborts probes in flight; resolves once they settled. */
  stop(): Promise<void>;
}

/**
 * Starts probing: the first round at once, then every `intervalMs` per origin (the next probe
 * is scheduled when the last one settled, so slow upstreams are never probed in parallel).
 * A 2xx or 3xx answer is healthy. Timers are unref'd: health checks never keep a process alive.
 */
export function startHealthChecks(options: HealthCheckOptions): HealthChecks {
  const states = options.origins.map(() => createHealthState(options));
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const controllers = new Set<AbortController>();
  const running = new Set<Promise<void>>();
  let stopped = false;

  function schedule(index: number, delayMs: number): void {
    if (stopped) return;
    const timer = setTimeout(() => {
      timers.delete(timer);
      const task = probeOnce(index).finally(() => {
        running.delete(task);
        schedule(index, options.intervalMs);
      });
      running.add(task);
    }, delayMs);
    Deno.unrefTimer(timer);
    timers.add(timer);
  }

  async function probeOnce(index: number): Promise<void> {
    const controller = new AbortController();
    controllers.add(controller);
    const timer = setTimeout(
      () => controller.abort(new Error("health check timed out")),
      options.timeoutMs,
    );
    Deno.unrefTimer(timer);
    let ok = false;
    try {
      const status = await options.probe(options.origins[index], options.path, controller.signal);
      ok = status >= 200 && status < 400;
    } catch {
      ok = false;
    } finally {
      clearTimeout(timer);
      controllers.delete(controller);
    }
    if (stopped) return;
    if (states[index].record(ok)) options.onChange(index, states[index].healthy);
  }

  options.origins.forEach((_, index) => schedule(index, 0));

  return {
    state: (index) => states[index],
    async stop() {
      stopped = true;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      for (const controller of controllers) controller.abort(new Error("health checks stopped"));
      await Promise.allSettled([...running]);
    },
  };
}
