/**
 * The breaker a worker's request path uses: a mirror of the instance's one real fleet breaker,
 * which runs on the main thread (KV, the instance id, heartbeats, the `minInstances` quorum).
 *
 * - `admit()` answers from the decision the main thread last published (it publishes on every
 *   change, to every worker at once), in memory, never waiting.
 * - Half-open: a worker holds no lease of its own. It asks the main thread, which takes the
 *   probe from the real breaker (so one probe per round fleet-wide still holds) and grants it
 *   to that worker; the worker's next request carries it. Until then requests are refused
 *   `half_open`, as the real breaker refuses them while it races for a lease. A worker that
 *   refused a request while open asks at the probe time itself, so the grant is usually there
 *   when the next request comes (admission cannot wait for a message from another thread).
 * - `record()`: only what the real breaker acts on crosses threads: failures and probe results.
 *   A success is a flag per service, sent with the worker's stats once a second (the fleet's
 *   activity exchange reads it); the breaker counts failures, never success rates.
 *
 * @module
 */
import type { FleetBreaker } from "../breaker/mod.ts";
import { classifyOutcome } from "../breaker/outcome.ts";
import { HALF_OPEN_RETRY_AFTER_MS } from "../breaker/policy.ts";
import type { Admission, AttemptOutcome, BreakerView } from "../breaker/types.ts";
import type { BreakerConfig } from "../config/schema.ts";
import type { FromWorker, MirrorDecision, MirrorEntry } from "./protocol.ts";

/** A granted probe not used within this is handed back, so the round is not held up. */
export const PROBE_GRANT_TTL_MS = 1000;
/** A probe request unanswered this long is asked again (the main thread may have dropped it). */
export const PROBE_ASK_AGAIN_MS = 1000;

const PROBE_TOKEN: unique symbol = Symbol("breakwater.workers.probe");

type ProbeAdmission = Admission & { allowed: true; [PROBE_TOKEN]?: number };

interface Grant {
  token: number;
  generation: number;
  timer: ReturnType<typeof setTimeout>;
}

interface MirroredService {
  decision: MirrorDecision;
  view: BreakerView;
  /** The admission every passing request gets (allocated once per publication). */
  pass: Admission;
  grants: Grant[];
  /** When a probe was last asked for (epoch ms), or -Infinity. */
  askedAtMs: number;
  /** The probe time an ask is scheduled for (epoch ms), or null. */
  preAskAtMs: number | null;
  /** The scheduled ask at the probe time. */
  preAskTimer: ReturnType<typeof setTimeout> | undefined;
  /** A request was recorded since the last stats. */
  busy: boolean;
}

/** The worker's copy of the main thread's breaker decisions; one per worker. */
export interface MirrorHub {
  /** Applies a publication from the main thread. */
  publish(entries: MirrorEntry[], degraded: boolean): void;
  /** A probe granted by the main thread. */
  grant(service: string, token: number, generation: number): void;
  /** A breaker over the services of one config (one per gateway generation). */
  breakerFor(policies: Record<string, BreakerConfig>): FleetBreaker;
  /** Services recorded since the last call, and resets them. */
  takeBusy(): string[];
  /** Hands back every unused grant, stops their timers and any scheduled probe ask. */
  close(): void;
}

/** Options of {@link createMirrorHub}. */
export interface MirrorHubOptions {
  /** Sends to the main thread. */
  post: (message: FromWorker) => void;
  /** Epoch ms (default `Date.now`): the main thread's `nextProbeAt` is on the same clock. */
  now?: () => number;
}

const UNKNOWN_VIEW = (service: string): BreakerView => ({
  service,
  state: "closed",
  failuresInWindow: 0,
  failureThreshold: 0,
  openedAt: null,
  nextProbeAt: null,
  generation: 0,
  openCount: 0,
  degraded: false,
});

const HALF_OPEN_BUSY: Admission = Object.freeze({
  allowed: false,
  retryAfterMs: HALF_OPEN_RETRY_AFTER_MS,
  state: "half_open",
});

const HANDED_BACK: AttemptOutcome = Object.freeze({ error: "aborted", durationMs: 0 });

/**
 * Creates the worker's mirror of the instance's breaker.
 *
 * @example
 * ```ts
 * const hub = createMirrorHub({ post: (message) => self.postMessage(message) });
 * self.onmessage = (event) => {
 *   if (event.data.type === "breakers") hub.publish(event.data.entries, event.data.degraded);
 * };
 * const gateway = createGateway(config, { breakerFactory: (c) => hub.breakerFor(policiesOf(c)) });
 * ```
 */
export function createMirrorHub(options: MirrorHubOptions): MirrorHub {
  const { post } = options;
  const now = options.now ?? Date.now;
  const services = new Map<string, MirroredService>();
  let degraded = false;
  let published: () => void = () => {};
  const firstPublication = new Promise<void>((resolve) => published = resolve);

  const serviceOf = (name: string): MirroredService => {
    let service = services.get(name);
    if (service === undefined) {
      // Not published yet (a service added by a reload that reached this worker first):
      // closed until the main thread says otherwise, as a fresh breaker starts closed.
      service = {
        decision: { kind: "pass", generation: 0 },
        view: UNKNOWN_VIEW(name),
        pass: { allowed: true, probe: false, generation: 0 },
        grants: [],
        askedAtMs: -Infinity,
        preAskAtMs: null,
        preAskTimer: undefined,
        busy: false,
      };
      services.set(name, service);
    }
    return service;
  };

  const handBack = (grant: Grant) => {
    clearTimeout(grant.timer);
    post({ type: "probe-result", token: grant.token, outcome: HANDED_BACK });
  };

  const askForProbe = (name: string, service: MirroredService, atMs: number) => {
    if (atMs - service.askedAtMs < PROBE_ASK_AGAIN_MS) return;
    service.askedAtMs = atMs;
    post({ type: "want-probe", service: name });
  };

  const cancelPreAsk = (service: MirroredService) => {
    if (service.preAskTimer !== undefined) clearTimeout(service.preAskTimer);
    service.preAskTimer = undefined;
    service.preAskAtMs = null;
  };

  /**
   * This worker has traffic for the service (it just refused a request): ask for the probe at
   * the probe time rather than with the first request after it, which would be refused while
   * the grant travels. Unused, the grant goes back after its TTL, as any grant.
   */
  const preAskAt = (name: string, service: MirroredService, probeAtMs: number, atMs: number) => {
    if (service.preAskAtMs === probeAtMs) return;
    cancelPreAsk(service);
    service.preAskAtMs = probeAtMs;
    const timer = setTimeout(() => {
      service.preAskTimer = undefined;
      const decision = service.decision;
      const sameRound = decision.kind === "probe" ||
        (decision.kind === "reject" && decision.probeAtMs === probeAtMs);
      if (!sameRound || service.grants.length > 0) return;
      askForProbe(name, service, now());
    }, Math.max(0, probeAtMs - atMs));
    // An ask never keeps a worker alive on its own.
    Deno.unrefTimer(timer as unknown as number);
    service.preAskTimer = timer;
  };

  const admit = (name: string): Admission => {
    const service = serviceOf(name);
    const decision = service.decision;
    if (decision.kind === "pass") return service.pass;
    if (decision.kind === "reject") {
      const atMs = now();
      if (decision.probeAtMs === null || atMs < decision.probeAtMs) {
        if (decision.probeAtMs === null) {
          return { allowed: false, retryAfterMs: decision.retryAfterMs, state: decision.state };
        }
        preAskAt(name, service, decision.probeAtMs, atMs);
        const retryAfterMs = Math.max(0, decision.probeAtMs - atMs);
        return { allowed: false, retryAfterMs, state: decision.state };
      }
    }
    const grant = service.grants.shift();
    if (grant !== undefined) {
      clearTimeout(grant.timer);
      const admission: ProbeAdmission = {
        allowed: true,
        probe: true,
        generation: grant.generation,
        [PROBE_TOKEN]: grant.token,
      };
      return admission;
    }
    askForProbe(name, service, now());
    return HALF_OPEN_BUSY;
  };

  const record = (
    policies: Record<string, BreakerConfig>,
    name: string,
    admission: Admission & { allowed: true },
    outcome: AttemptOutcome,
  ): void => {
    const service = serviceOf(name);
    service.busy = true;
    const token = (admission as ProbeAdmission)[PROBE_TOKEN];
    if (admission.probe && token !== undefined) {
      post({ type: "probe-result", token, outcome });
      return;
    }
    const policy = policies[name];
    if (policy === undefined || classifyOutcome(policy, outcome) !== "failure") return;
    post({ type: "failure", service: name, generation: admission.generation, outcome });
  };

  return {
    publish(entries, nowDegraded) {
      degraded = nowDegraded;
      for (const entry of entries) {
        const service = serviceOf(entry.service);
        service.decision = entry.decision;
        service.view = entry.view;
        if (entry.decision.kind === "pass") {
          service.pass = { allowed: true, probe: false, generation: entry.decision.generation };
        }
        if (entry.decision.kind !== "reject" || entry.decision.probeAtMs === null) {
          // A new round (or none): the next probe request goes out at once.
          if (entry.decision.kind !== "probe") service.askedAtMs = -Infinity;
        }
        if (
          entry.decision.kind === "pass" || entry.decision.kind === "reject" &&
            entry.decision.probeAtMs !== service.preAskAtMs
        ) {
          cancelPreAsk(service);
        }
      }
      published();
    },
    grant(name, token, generation) {
      const service = serviceOf(name);
      service.askedAtMs = -Infinity;
      const grant: Grant = { token, generation, timer: undefined as unknown as Grant["timer"] };
      grant.timer = setTimeout(() => {
        const at = service.grants.indexOf(grant);
        if (at < 0) return;
        service.grants.splice(at, 1);
        handBack(grant);
      }, PROBE_GRANT_TTL_MS);
      service.grants.push(grant);
    },
    breakerFor(policies) {
      const names = Object.keys(policies);
      const view = (name: string): BreakerView => {
        if (!(name in policies)) throw new Error(`breaker: unknown service "${name}"`);
        return serviceOf(name).view;
      };
      return {
        start: () => firstPublication,
        admit,
        record: (name, admission, outcome) => record(policies, name, admission, outcome),
        view,
        views: () => names.map(view),
        force() {
          return Promise.reject(
            new Error("breaker actions run on the main thread's admin port, not in a worker"),
          );
        },
        audit: () => Promise.resolve([]),
        fleet() {
          return Promise.reject(new Error("the fleet view is the main thread's admin port's"));
        },
        degraded: () => degraded,
        close: () => Promise.resolve(),
      };
    },
    takeBusy() {
      const busy: string[] = [];
      for (const [name, service] of services) {
        if (!service.busy) continue;
        service.busy = false;
        busy.push(name);
      }
      return busy;
    },
    close() {
      for (const service of services.values()) {
        cancelPreAsk(service);
        for (const grant of service.grants.splice(0)) handBack(grant);
      }
    },
  };
}
