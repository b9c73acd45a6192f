/**
 * The main thread's side of the workers' breaker mirror: it publishes what each service's
 * real breaker decides, feeds the real breaker with what the workers report, and hands out
 * half-open probes one at a time from the real breaker's own leases.
 *
 * The instance stays one member of the fleet: one breaker, one instance id, one KV session, one
 * `minInstances` vote, whatever the number of workers.
 *
 * @module
 */
import type { FleetBreaker } from "../breaker/mod.ts";
import type { Admission, AttemptOutcome } from "../breaker/types.ts";
import type { FromWorker, MirrorDecision, MirrorEntry, ToWorker } from "./protocol.ts";

/**
 * How often the real breaker is re-read for changes the workers did not cause (another
 * instance's trip read from KV, an operator's force, a probe time reached, a hold released)
 * while anything is going on: a service not closed, failures in its window, a probe wanted.
 * Changes a worker causes (a failure that trips) are published at once.
 */
export const PUBLISH_INTERVAL_MS = 5;
/**
 * The re-read while every service is closed without failures: what can change then comes from
 * KV (re-read every `kv.syncIntervalMs`, 250 ms by default) or an operator, so 25 ms adds
 * little, and the main thread does not wake 200 times a second for nothing.
 */
export const QUIET_PUBLISH_INTERVAL_MS = 25;
/** A probe wanted but not granted within this is forgotten; the worker asks again. */
export const WANT_TTL_MS = 1000;

const ACTIVITY: AttemptOutcome = Object.freeze({ status: 200, durationMs: 0 });
const RELEASED: AttemptOutcome = Object.freeze({ error: "aborted", durationMs: 0 });

/** Options of {@link createBreakerHost}. */
export interface BreakerHostOptions {
  /** The breaker of the config in force (a reload may replace it). */
  breaker: () => FleetBreaker;
  /** Sends to one worker. */
  postTo: (worker: number, message: ToWorker) => void;
  /** Sends to every running worker. */
  broadcast: (message: ToWorker) => void;
  /** Epoch ms (default `Date.now`). */
  now?: () => number;
}

/** The running host. */
export interface BreakerHost {
  /** Handles a breaker message from `worker`; false for a message that is not one. */
  handle(worker: number, message: FromWorker): boolean;
  /** The current publication, for a worker that just started. */
  snapshot(): ToWorker & { type: "breakers" };
  /** Hands back the probes `worker` held (it crashed or stopped). */
  forget(worker: number): void;
  /** Publishes now if anything changed. */
  publish(): void;
  /** Stops the re-read timer and releases every probe still out. */
  close(): void;
}

interface OutProbe {
  service: string;
  worker: number;
  admission: Admission & { allowed: true };
  breaker: FleetBreaker;
}

/**
 * What a worker should answer for `service` now. `admit()` is called only where it has no
 * side effect (closed, open before its probe time, forced): in half-open it would take a
 * probe, which is granted to a worker that asked instead.
 */
export function decide(breaker: FleetBreaker, service: string, nowMs: number): {
  decision: MirrorDecision;
  probe: (Admission & { allowed: true }) | null;
} {
  const view = breaker.view(service);
  const probeDue = view.state === "half_open" ||
    (view.state === "open" && view.nextProbeAt !== null && view.nextProbeAt <= nowMs);
  if (probeDue) return { decision: { kind: "probe" }, probe: null };
  const admission = breaker.admit(service);
  if (admission.allowed) {
    // The probe time came between the view and admit: that probe is real; hand it out.
    if (admission.probe) return { decision: { kind: "probe" }, probe: admission };
    return { decision: { kind: "pass", generation: admission.generation }, probe: null };
  }
  return {
    decision: {
      kind: "reject",
      state: admission.state,
      retryAfterMs: admission.retryAfterMs,
      probeAtMs: view.state === "open" ? view.nextProbeAt : null,
    },
    probe: null,
  };
}

/**
 * Creates the host and starts re-reading the breaker every {@link PUBLISH_INTERVAL_MS} (every
 * {@link QUIET_PUBLISH_INTERVAL_MS} while all is quiet).
 *
 * @example
 * ```ts
 * const host = createBreakerHost({ breaker: () => gateway.breaker, postTo, broadcast });
 * worker.onmessage = (event) => host.handle(index, event.data);
 * worker.postMessage(host.snapshot());
 * ```
 */
export function createBreakerHost(options: BreakerHostOptions): BreakerHost {
  const now = options.now ?? Date.now;
  const probes = new Map<number, OutProbe>();
  /** Workers waiting for a probe, per service, with when they asked. */
  const wants = new Map<string, Map<number, number>>();
  let nextToken = 1;
  let lastFingerprint = "";
  let current: ToWorker & { type: "breakers" } = { type: "breakers", entries: [], degraded: false };

  const compute = (): ToWorker & { type: "breakers" } => {
    const breaker = options.breaker();
    const atMs = now();
    const entries: MirrorEntry[] = [];
    for (const view of breaker.views()) {
      const { decision, probe } = decide(breaker, view.service, atMs);
      if (probe !== null) release(breaker, view.service, probe);
      entries.push({ service: view.service, decision, view: breaker.view(view.service) });
    }
    return { type: "breakers", entries, degraded: breaker.degraded() };
  };

  const release = (
    breaker: FleetBreaker,
    service: string,
    admission: Admission & { allowed: true },
  ) => {
    // Nobody asked for it yet: give the lease back so the next asker can take it.
    breaker.record(service, admission, RELEASED);
  };

  const publish = () => {
    const next = compute();
    const fingerprint = JSON.stringify(next);
    if (fingerprint === lastFingerprint) return;
    lastFingerprint = fingerprint;
    current = next;
    options.broadcast(next);
  };

  const grantWanted = () => {
    if (wants.size === 0) return;
    const breaker = options.breaker();
    const atMs = now();
    for (const [service, askers] of wants) {
      for (const [worker, askedAtMs] of askers) {
        if (atMs - askedAtMs > WANT_TTL_MS) {
          askers.delete(worker);
          continue;
        }
        let admission: Admission;
        try {
          admission = breaker.admit(service);
        } catch {
          askers.delete(worker); // the service was removed by a reload
          continue;
        }
        if (!admission.allowed) break; // the real breaker is still racing for a lease
        askers.delete(worker);
        if (!admission.probe) continue; // closed meanwhile: the next publication says so
        const token = nextToken++;
        probes.set(token, { service, worker, admission, breaker });
        options.postTo(worker, {
          type: "probe",
          service,
          token,
          generation: admission.generation,
        });
      }
      if (askers.size === 0) wants.delete(service);
    }
  };

  const tick = () => {
    try {
      grantWanted();
      publish();
    } catch {
      // A breaker replaced mid-tick by a reload: the next tick reads the new one.
    }
  };
  /** Anything that makes the 5 ms re-read worth it. */
  const busy = () =>
    wants.size > 0 || probes.size > 0 ||
    current.entries.some((entry) =>
      entry.decision.kind !== "pass" || entry.view.failuresInWindow > 0
    );
  let timer: ReturnType<typeof setTimeout> | undefined;
  let closed = false;
  const schedule = () => {
    if (closed) return;
    timer = setTimeout(() => {
      tick();
      schedule();
    }, busy() ? PUBLISH_INTERVAL_MS : QUIET_PUBLISH_INTERVAL_MS);
  };
  schedule();

  return {
    handle(worker, message) {
      switch (message.type) {
        case "failure": {
          const breaker = options.breaker();
          try {
            breaker.record(
              message.service,
              { allowed: true, probe: false, generation: message.generation },
              message.outcome,
            );
          } catch {
            return true; // a service removed by a reload
          }
          publish();
          return true;
        }
        case "want-probe": {
          let askers = wants.get(message.service);
          if (askers === undefined) wants.set(message.service, askers = new Map());
          if (!askers.has(worker)) askers.set(worker, now());
          grantWanted();
          return true;
        }
        case "probe-result": {
          const probe = probes.get(message.token);
          if (probe === undefined) return true;
          probes.delete(message.token);
          probe.breaker.record(probe.service, probe.admission, message.outcome);
          publish();
          return true;
        }
        case "stats": {
          // The fleet's activity exchange counts instances sending to a service; a success
          // outcome marks it and counts nothing else.
          const breaker = options.breaker();
          for (const service of message.busy) {
            try {
              const generation = breaker.view(service).generation;
              breaker.record(service, { allowed: true, probe: false, generation }, ACTIVITY);
            } catch {
              // removed by a reload
            }
          }
          return false; // the stats' other parts are read elsewhere too
        }
        default:
          return false;
      }
    },
    snapshot() {
      if (lastFingerprint === "") publish();
      return current;
    },
    forget(worker) {
      for (const [token, probe] of probes) {
        if (probe.worker !== worker) continue;
        probes.delete(token);
        probe.breaker.record(probe.service, probe.admission, RELEASED);
      }
      for (const askers of wants.values()) askers.delete(worker);
    },
    publish,
    close() {
      closed = true;
      clearTimeout(timer);
      for (const [token, probe] of probes) {
        probes.delete(token);
        probe.breaker.record(probe.service, probe.admission, RELEASED);
      }
    },
  };
}
