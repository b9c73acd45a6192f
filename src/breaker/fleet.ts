/**
 * The fleet-shared breaker: one breaker per service for every gateway instance, kept in Deno KV,
 * decided from memory.
 *
 * Two layers per service, both driven by the pure state machine in `policy.ts`:
 *
 * - the **fleet record**: this instance's copy of `["breakwater", "breaker", service]`. It only
 *   changes by reading KV (start-up, `kv.watch`, a `getMany` every `syncIntervalMs`, the result
 *   of our own compare-and-set). While it is not `closed` it decides alone.
 * - the **local breaker**: this instance's own breaker over its own failures. It decides while
 *   the fleet record is closed, and alone while KV is unavailable (degraded) or absent. It lets
 *   an instance open at once on its own failures without waiting for KV, and it is what
 *   `minInstances` leaves open when only this instance sees failures (a bad network path). Every
 *   new fleet generation resets it: a fleet-wide close or an operator reset ends local outages.
 *
 * `admit()` reads those two records and two small arrays; it never awaits. KV work (failure
 * reports, trip and probe CAS, lease races, re-sync) runs in the background, each call limited
 * to `kvTimeoutMs`; any failure flips the instance to degraded, and a later successful re-sync
 * rejoins the fleet.
 *
 * ## How far past `failureThreshold` a fleet can go (the overshoot)
 *
 * Let T = `failureThreshold`, instances i = 1..N, C_i = calls instance i has in flight to the
 * service (at most its `pool.maxConnections`), r_i = its rate of calls, R = one report round
 * trip to KV (write the instance's bucket count, list the window). R is ~1 ms for a lone
 * process on a local file and 5-20 ms (up to ~50 ms right after start-up) with three processes
 * contending for one SQLite file's write lock. The upstream starts failing every call.
 *
 * 1. Calls already in flight fail whatever anyone decides: up to C_i per instance. A failure
 *    counts when its outcome arrives (a timeout arrives `timeoutMs` after the call was sent), so
 *    this term is inherent to every breaker.
 * 2. Counting lag. Each instance reports failures asynchronously, coalesced to one report in
 *    flight per service, and reads the whole window after each report. What it knows of the
 *    fleet total (the others' counts as of its last read, plus its own exact count) is a lower
 *    bound of the truth that lags by at most what the others recorded during about one round
 *    trip. It opens its own breaker the moment that known total reaches T — on recording a
 *    failure, or when a read shows it — without waiting for the compare-and-set, which follows
 *    in the background and puts the fleet record (one `probeAt` for everyone) in charge.
 * 3. Propagation. So an instance that keeps sending stops within about 2R of the true total
 *    reaching T (the report in flight, then one more). An instance that is not sending adds no
 *    failures, and learns of the open record through `kv.watch` (same process, or a KV Connect
 *    server: at once) or the next re-sync (<= `syncIntervalMs` + one `getMany` on a shared
 *    SQLite file, where watch does not see other processes' writes).
 * 4. The local cap. Each instance's local breaker also opens at T of its own failures in the
 *    window, whatever KV does, so no instance ever sends more than T + C_i failing calls.
 *
 * So the failed calls the upstream sees before every instance rejects are at most
 *
 *     T + sum over i of min(T, C_i + ceil(r_i * 2R))
 *
 * i.e. T plus, per instance, its calls in flight plus the calls it sends during about two KV
 * round trips, never more than N * (T + C) (what N independent breakers give). Measured
 * (tests/breaker/fleet_processes_test.ts, 3 processes on one file, T = 5, one call at a time
 * each): at ~40 calls/s per instance the upstream saw 7 failing calls (T + 2) in 10 of 10
 * runs; at ~100 calls/s per instance 7-12 (T + 2 to T + 7) where independent breakers allow 15.
 * The fleet window counts in buckets of `windowMs / 10` and counts a bucket while any part of
 * it is in the window, so the fleet may count a failure up to 10% longer than `windowMs`: it
 * trips early, never late. With `minInstances` > 1 the fleet trip also waits for that many
 * distinct reporters; an instance alone with failures is stopped by its local breaker (point 4).
 *
 * ## Half-open: leases
 *
 * An `open` record whose `probeAt` passed is half-open for every instance at once (derived, no
 * write). A request that finds it so, with no lease in hand, is rejected and starts (single
 * flight) a lease race: the slots `["breakwater", "probe", service, generation, 0..halfOpenProbes-1]`
 * are claimed by compare-and-set, each holding `{ instanceId, expiresAtMs }`. Only a caller that
 * got a slot gets `probe: true`, so exactly `halfOpenProbes` requests reach the upstream per
 * round across the fleet. A slot expires `probeLeaseMs` after it was taken (so a prober that
 * crashed cannot wedge the fleet half-open); a probe whose client went away hands its slot back.
 * A probe's success closes the breaker (new generation); its failure re-opens it for
 * `recoveryTimeoutMs * 2^k` (jittered, capped); a result that arrives after another probe
 * already moved the generation on is ignored.
 *
 * @module
 */
import type { BreakerConfig } from "../config/schema.ts";
import { withTimeout } from "./_kv_retry.ts";
import {
  type BreakerStore,
  createKvBreakerStore,
  type Lease,
  type RecordWatch,
  type StoredEntry,
} from "./kv_store.ts";
import { classifyOutcome, type OutcomeKind } from "./outcome.ts";
import {
  type BreakerEvent,
  type BreakerRecord,
  type ForceAction,
  HALF_OPEN_RETRY_AFTER_MS,
  INITIAL_RECORD,
  isProbeDue,
  retryAfterMs,
  shouldTrip,
  stateAt,
  transition,
} from "./policy.ts";
import type {
  Admission,
  AttemptOutcome,
  BreakerState,
  BreakerView,
  TransitionEvent,
} from "./types.ts";
import {
  addFailure,
  type BucketCount,
  bucketIndex,
  bucketWidthMs,
  countFailures,
  sumWindow,
  windowBuckets,
} from "./window.ts";

/** Options of {@link createFleetBreaker}. */
export interface FleetBreakerOptions {
  /** The shared store; null => purely local breakers (still fully functional). Not closed by us. */
  kv: Deno.Kv | null;
  /** Each service's breaker policy. */
  services: Record<string, BreakerConfig>;
  /** Distinct per process, used for the `minInstances` quorum and lease ownership. */
  instanceId: string;
  /** The clock (epoch ms). Default `Date.now`. */
  now?: () => number;
  /** A number in [0, 1) for jitter. Default `Math.random`. */
  random?: () => number;
  /** How often every breaker record is re-read with `getMany`. Default 250. */
  syncIntervalMs?: number;
  /**
   * The re-sync interval while this instance has seen failures within a service's `windowMs`
   * (default 10): an outage is when other instances' trips must reach us fast, and a
   * `getMany` every 10 ms during one costs little. Quiet instances keep `syncIntervalMs`.
   */
  alertSyncIntervalMs?: number;
  /** A KV call slower than this counts as KV trouble -> degraded. Default 1000. */
  kvTimeoutMs?: number;
  /** Called for every state change this instance observes (metrics, logs). Must not throw. */
  onTransition?: (event: TransitionEvent) => void;
  /**
   * How long a probe slot stays taken: longer than the service's whole request time
   * (`timeoutMs`), or a second probe could start while the first still runs. Default 15000.
   */
  probeLeaseMs?: number;
  /**
   * Opens a fresh KV handle. When given, a degraded instance whose KV calls fail (not merely
   * time out) calls it every `reopenIntervalMs` until a handle answers, then rejoins. Handles it
   * returns belong to the breaker and are closed by `close()`.
   */
  reopenKv?: () => Promise<Deno.Kv>;
  /** Pause between `reopenKv` attempts. Default 1000. */
  reopenIntervalMs?: number;
  /** Wraps the KV store (tests count its calls with it). */
  wrapStore?: (store: BreakerStore) => BreakerStore;
}

/** The fleet-shared breakers of all services of one gateway instance. */
export interface FleetBreaker {
  /** Loads the fleet's state from KV before serving; starts watch + periodic re-sync. Never throws because of KV (goes degraded instead). */
  start(): Promise<void>;
  /** Synchronous, memory only, well under 1 us. Half-open: only a caller that holds a probe lease gets probe: true; others are rejected. */
  admit(service: string): Admission;
  /** Records an attempt's outcome. Synchronous for the caller: KV writes happen off the response path (fire-and-forget, errors caught). Successes write nothing to KV per request (except a probe's success, which closes the breaker). */
  record(service: string, admission: Admission & { allowed: true }, outcome: AttemptOutcome): void;
  /** One service's breaker now. Throws for a service that is not configured. */
  view(service: string): BreakerView;
  /** Every service's breaker now, in configuration order. */
  views(): BreakerView[];
  /** Operator action for the whole fleet: "open" -> forced_open, "close" -> forced_closed, "reset" -> closed with a new generation and no force. While degraded it applies to this instance only (the view says `degraded`). */
  force(service: string, action: "open" | "close" | "reset"): Promise<BreakerView>;
  /** True while KV is unavailable/slow and local breakers are in charge. */
  degraded(): boolean;
  /** Stops timers and watches. Does NOT close the kv handle (the owner does). Idempotent. */
  close(): Promise<void>;
}

/** Where an admission came from; travels inside the admission object, invisible to callers. */
interface Grant {
  /** `fleet`: a leased fleet probe; `local`: a local half-open probe; `none`: not a probe. */
  scope: "fleet" | "local" | "none";
  /** The local breaker's generation at admission (stale local outcomes are ignored). */
  localGeneration: number;
  /** The lease a fleet probe holds. */
  lease: Lease | null;
}

const GRANT: unique symbol = Symbol("breakwater.breaker.grant");

type Granted = Admission & { allowed: true; [GRANT]?: Grant };

/** Everything one service's breaker keeps in memory. */
interface ServiceBreaker {
  readonly name: string;
  readonly policy: BreakerConfig;
  readonly bucketWidthMs: number;
  /** Our copy of the fleet record, and the versionstamp it was read at. */
  fleet: BreakerRecord;
  fleetVersion: string | null;
  /** This instance's own breaker and its failure stamps. */
  local: BreakerRecord;
  localFailures: number[];
  /** Start times of local half-open probes still running. */
  localProbeStartsMs: number[];
  /** Fleet probe slots we won and have not handed to a request yet. */
  leases: Lease[];
  leaseRequested: boolean;
  leaseRetryAtMs: number;
  /** Our own failure counts per bucket of the fleet generation `ownGeneration`. */
  ownGeneration: number;
  ownBuckets: Map<number, number>;
  dirtyBuckets: Set<number>;
  reporting: boolean;
  /** The fleet's counts as last read (for the view). */
  fleetCounts: BucketCount[];
  fleetCountsGeneration: number;
  /** The state last reported through onTransition. */
  lastState: BreakerState;
  /** The admission every non-probe request gets (allocated once per change). */
  pass: Granted;
}

/**
 * Creates the fleet breaker of one gateway instance. Call `start()` before serving and
 * `close()` on shutdown.
 *
 * @example
 * ```ts
 * const kv = await Deno.openKv("./data/breakwater.kv");
 * const breaker = createFleetBreaker({ kv, services: { users: config.services.users.breaker }, instanceId: crypto.randomUUID() });
 * await breaker.start();
 * const admission = breaker.admit("users");
 * if (!admission.allowed) return problem(503, "breaker_open", admission.retryAfterMs);
 * // ... forward, then:
 * breaker.record("users", admission, { status: response.status, durationMs });
 * ```
 */
export function createFleetBreaker(options: FleetBreakerOptions): FleetBreaker {
  const now = options.now ?? Date.now;
  const random = options.random ?? Math.random;
  const syncIntervalMs = options.syncIntervalMs ?? 250;
  const alertSyncIntervalMs = Math.min(syncIntervalMs, options.alertSyncIntervalMs ?? 10);
  let alertUntilMs = -Infinity;
  let syncDueAtMs = Infinity;
  const kvTimeoutMs = options.kvTimeoutMs ?? 1000;
  const probeLeaseMs = options.probeLeaseMs ?? 15000;
  const reopenIntervalMs = options.reopenIntervalMs ?? 1000;
  const onTransition = options.onTransition;

  const services = new Map<string, ServiceBreaker>();
  for (const [name, policy] of Object.entries(options.services)) {
    const service: ServiceBreaker = {
      name,
      policy,
      bucketWidthMs: bucketWidthMs(policy),
      fleet: INITIAL_RECORD,
      fleetVersion: null,
      local: INITIAL_RECORD,
      localFailures: [],
      localProbeStartsMs: [],
      leases: [],
      leaseRequested: false,
      leaseRetryAtMs: 0,
      ownGeneration: 0,
      ownBuckets: new Map(),
      dirtyBuckets: new Set(),
      reporting: false,
      fleetCounts: [],
      fleetCountsGeneration: -1,
      lastState: "closed",
      pass: { allowed: true, probe: false, generation: 0 },
    };
    services.set(name, service);
  }
  const names = [...services.keys()];

  let kv = options.kv;
  let ownedKv: Deno.Kv | null = null;
  let store: BreakerStore | null = null;
  let isDegraded = false;
  let reopenNeeded = false;
  let nextReopenAtMs = 0;
  let started = false;
  let closed = false;
  let closing: Promise<void> | null = null;
  let watch: RecordWatch | null = null;
  let syncTimer: ReturnType<typeof setTimeout> | undefined;
  const background = new Set<Promise<unknown>>();

  function makeStore(handle: Deno.Kv): BreakerStore {
    const kvStore = createKvBreakerStore(handle, { instanceId: options.instanceId, random });
    return options.wrapStore ? options.wrapStore(kvStore) : kvStore;
  }

  /** KV is in charge (configured, reachable). Otherwise the local breakers decide. */
  function fleetActive(): boolean {
    return store !== null && !isDegraded;
  }

  function serviceOf(name: string): ServiceBreaker {
    const service = services.get(name);
    if (service === undefined) throw new Error(`breaker: unknown service "${name}"`);
    return service;
  }

  function governing(service: ServiceBreaker): BreakerRecord {
    return fleetActive() && service.fleet.state !== "closed" ? service.fleet : service.local;
  }

  function observe(service: ServiceBreaker, state: BreakerState, atMs: number): void {
    if (state === service.lastState) return;
    const event: TransitionEvent = {
      service: service.name,
      from: service.lastState,
      to: state,
      atMs,
    };
    service.lastState = state;
    if (onTransition === undefined) return;
    try {
      onTransition(event);
    } catch {
      // A metrics hook must never break admission.
    }
  }

  /** Rebuilds the cached pass admission and reports the state, after any record changed. */
  function refresh(service: ServiceBreaker): void {
    service.pass = {
      allowed: true,
      probe: false,
      generation: fleetActive() ? service.fleet.generation : service.local.generation,
      [GRANT]: { scope: "none", localGeneration: service.local.generation, lease: null },
    };
    const atMs = now();
    observe(service, stateAt(governing(service), atMs), atMs);
  }

  function setLocal(service: ServiceBreaker, next: BreakerRecord): void {
    if (next === service.local) return;
    if (next.generation !== service.local.generation) {
      service.localFailures = [];
      service.localProbeStartsMs = [];
    }
    service.local = next;
    refresh(service);
  }

  function applyLocal(service: ServiceBreaker, event: BreakerEvent, atMs: number): void {
    setLocal(service, transition(service.policy, service.local, event, atMs, random()));
  }

  /** Takes a record read from KV if it is newer than ours. */
  function adopt(service: ServiceBreaker, entry: StoredEntry): void {
    // A missing record is the initial one, which we start from anyway.
    if (entry.versionstamp === null) return;
    if (service.fleetVersion !== null && entry.versionstamp <= service.fleetVersion) return;
    const previous = service.fleet;
    service.fleet = entry.record;
    service.fleetVersion = entry.versionstamp;
    if (entry.record.generation !== previous.generation) {
      // A new fleet generation: counts start from zero, and a fleet-wide close or an operator
      // action ends whatever this instance's local breaker was doing.
      service.local = { ...INITIAL_RECORD, generation: service.local.generation + 1 };
      service.localFailures = [];
      service.localProbeStartsMs = [];
      service.leases = service.leases.filter((lease) =>
        lease.generation === entry.record.generation
      );
      service.leaseRetryAtMs = 0;
      service.ownGeneration = entry.record.generation;
      service.ownBuckets.clear();
      service.dirtyBuckets.clear();
      service.fleetCounts = [];
    }
    refresh(service);
  }

  function enterDegraded(): void {
    if (isDegraded || closed) return;
    isDegraded = true;
    for (const service of services.values()) {
      // The fleet's outage (or an operator's force) goes on locally: KV trouble must not
      // close a breaker that the fleet holds open.
      if (service.fleet.state !== "closed") {
        service.local = { ...service.fleet, generation: service.local.generation + 1 };
        service.localFailures = [];
        service.localProbeStartsMs = [];
      }
      service.leases = [];
      service.dirtyBuckets.clear();
      refresh(service);
    }
  }

  function rejoin(): void {
    isDegraded = false;
    // Versionstamps from before the trouble may come from another handle (or another store
    // behind the same path): accept whatever KV says now.
    for (const service of services.values()) service.fleetVersion = null;
  }

  /** A KV call with the time limit; any failure makes the instance degraded. */
  async function kvCall<T>(call: (store: BreakerStore) => Promise<T>): Promise<T> {
    const current = store;
    if (current === null || closed) throw new Error("breaker: no KV store");
    try {
      return await withTimeout(call(current), kvTimeoutMs);
    } catch (error) {
      if (current === store) {
        enterDegraded();
        if (!(error instanceof Error && error.name === "KvTimeoutError")) reopenNeeded = true;
      }
      throw error;
    }
  }

  /** Fire-and-forget work: tracked so close() can wait for it, errors swallowed. */
  function inBackground(work: () => Promise<void>): void {
    const task = work().catch(() => {
      // Already handled: kvCall turned it into degraded mode.
    });
    background.add(task);
    task.finally(() => background.delete(task));
  }

  // ---- admission -------------------------------------------------------------------------

  function reject(
    service: ServiceBreaker,
    record: BreakerRecord,
    state: BreakerState,
    atMs: number,
  ): Admission {
    return { allowed: false, retryAfterMs: retryAfterMs(service.policy, record, atMs), state };
  }

  function takeLease(service: ServiceBreaker, generation: number, atMs: number): Lease | null {
    while (service.leases.length > 0) {
      const lease = service.leases.shift()!;
      if (lease.generation === generation && lease.expiresAtMs > atMs) return lease;
    }
    return null;
  }

  function requestLease(service: ServiceBreaker, generation: number, atMs: number): void {
    if (service.leaseRequested || atMs < service.leaseRetryAtMs || !started) return;
    service.leaseRequested = true;
    inBackground(async () => {
      try {
        const lease = await kvCall((kvStore) =>
          kvStore.acquireLease(
            service.name,
            generation,
            service.policy.halfOpenProbes,
            now(),
            probeLeaseMs,
          )
        );
        if (lease === null) {
          // Every slot is taken: ask again after a re-sync, not on every rejected request.
          service.leaseRetryAtMs = now() + syncIntervalMs;
        } else if (fleetActive() && service.fleet.generation === lease.generation) {
          service.leases.push(lease);
        } else {
          await kvCall((kvStore) => kvStore.releaseLease(service.name, lease));
        }
      } finally {
        service.leaseRequested = false;
      }
    });
  }

  function admitLocal(service: ServiceBreaker, atMs: number): Admission {
    const local = service.local;
    switch (local.state) {
      case "closed":
      case "forced_closed":
        return service.pass;
      case "forced_open":
        return reject(service, local, "forced_open", atMs);
      case "open": {
        if (!isProbeDue(local, atMs)) return reject(service, local, "open", atMs);
        observe(service, "half_open", atMs);
        const running = service.localProbeStartsMs;
        // A probe whose outcome never came (a bug upstream of us) frees its slot in time.
        while (running.length > 0 && running[0] <= atMs - probeLeaseMs) running.shift();
        if (running.length >= service.policy.halfOpenProbes) {
          return { allowed: false, retryAfterMs: HALF_OPEN_RETRY_AFTER_MS, state: "half_open" };
        }
        running.push(atMs);
        const admission: Granted = {
          allowed: true,
          probe: true,
          generation: service.pass.generation,
          [GRANT]: { scope: "local", localGeneration: local.generation, lease: null },
        };
        return admission;
      }
    }
  }

  function admit(name: string): Admission {
    const service = serviceOf(name);
    const atMs = now();
    if (fleetActive()) {
      const fleet = service.fleet;
      switch (fleet.state) {
        case "forced_closed":
          return service.pass;
        case "forced_open":
          return reject(service, fleet, "forced_open", atMs);
        case "open": {
          if (!isProbeDue(fleet, atMs)) return reject(service, fleet, "open", atMs);
          observe(service, "half_open", atMs);
          const lease = takeLease(service, fleet.generation, atMs);
          if (lease === null) {
            requestLease(service, fleet.generation, atMs);
            return { allowed: false, retryAfterMs: HALF_OPEN_RETRY_AFTER_MS, state: "half_open" };
          }
          const admission: Granted = {
            allowed: true,
            probe: true,
            generation: fleet.generation,
            [GRANT]: { scope: "fleet", localGeneration: service.local.generation, lease },
          };
          return admission;
        }
      }
    }
    return admitLocal(service, atMs);
  }

  // ---- outcomes --------------------------------------------------------------------------

  function recordLocalProbe(
    service: ServiceBreaker,
    localGeneration: number,
    kind: OutcomeKind,
    atMs: number,
  ): void {
    service.localProbeStartsMs.shift();
    if (kind === "ignored") return;
    const type = kind === "success" ? "probe_success" : "probe_failure";
    applyLocal(service, { type, generation: localGeneration }, atMs);
  }

  function recordFleetProbe(
    service: ServiceBreaker,
    generation: number,
    lease: Lease,
    kind: OutcomeKind,
  ): void {
    if (kind === "ignored") {
      // The client went away: nothing learned, so let the next request probe instead.
      inBackground(async () => {
        await kvCall((kvStore) => kvStore.releaseLease(service.name, lease));
      });
      return;
    }
    if (generation !== service.fleet.generation) return;
    const type = kind === "success" ? "probe_success" : "probe_failure";
    inBackground(async () => {
      const result = await kvCall((kvStore) =>
        kvStore.transition(
          service.name,
          (current) => transition(service.policy, current, { type, generation }, now(), random()),
          generation,
        )
      );
      adopt(service, result);
    });
  }

  function countLocalFailure(
    service: ServiceBreaker,
    localGeneration: number,
    atMs: number,
  ): void {
    if (service.local.state !== "closed" || localGeneration !== service.local.generation) return;
    service.localFailures = addFailure(service.localFailures, service.policy, atMs);
    // The local breaker ignores minInstances: it is the one that stops a lone bad path.
    if (
      countFailures(service.localFailures, service.policy, atMs) >= service.policy.failureThreshold
    ) {
      applyLocal(service, { type: "trip" }, atMs);
    }
  }

  function countFleetFailure(service: ServiceBreaker, atMs: number): void {
    if (service.ownGeneration !== service.fleet.generation) {
      service.ownGeneration = service.fleet.generation;
      service.ownBuckets.clear();
      service.dirtyBuckets.clear();
    }
    const bucket = bucketIndex(atMs, service.bucketWidthMs);
    const oldest = windowBuckets(service.policy, atMs).first;
    for (const known of service.ownBuckets.keys()) {
      if (known < oldest) service.ownBuckets.delete(known);
    }
    service.ownBuckets.set(bucket, (service.ownBuckets.get(bucket) ?? 0) + 1);
    service.dirtyBuckets.add(bucket);
    openOnKnownTotal(service, atMs);
    if (!service.reporting) {
      service.reporting = true;
      inBackground(() => reportFailures(service).finally(() => service.reporting = false));
    }
  }

  /**
   * Opens the local breaker at once when the fleet total this instance knows of reaches the
   * threshold: the other instances' counts as of our last window read plus our own exact count.
   * Others' counts only grow, so this is a lower bound of the true total — it never opens
   * early — and it saves the KV round trips of the fleet trip (our report, then the CAS) on
   * the request path. The fleet trip follows in the background; adopting it resets the local
   * breaker, so the fleet's record (one probeAt for everyone) takes over.
   */
  function openOnKnownTotal(service: ServiceBreaker, atMs: number): void {
    if (service.local.state !== "closed") return;
    if (service.fleetCountsGeneration !== service.fleet.generation) return;
    const known: BucketCount[] = service.fleetCounts.filter((count) =>
      count.instanceId !== options.instanceId
    );
    for (const [bucket, count] of service.ownBuckets) {
      known.push({ bucket, instanceId: options.instanceId, count });
    }
    const totals = sumWindow(known, service.policy, atMs);
    if (shouldTrip(service.policy, totals.failures, totals.reportingInstances)) {
      applyLocal(service, { type: "trip" }, atMs);
    }
  }

  /** Writes our dirty bucket counts, reads the fleet window, trips if it reached the threshold. */
  async function reportFailures(service: ServiceBreaker): Promise<void> {
    // Failures that arrive while a report is in flight are taken by the next round: at most one
    // report per service in flight, however fast failures come.
    while (service.dirtyBuckets.size > 0 && fleetActive() && !closed) {
      const generation = service.ownGeneration;
      const writes = [...service.dirtyBuckets].map((bucket) => ({
        bucket,
        count: service.ownBuckets.get(bucket) ?? 0,
      }));
      service.dirtyBuckets.clear();
      // Keys outlive the window; expiry is only garbage collection (see kv_store.ts).
      const expireInMs = 2 * service.policy.windowMs + 2 * service.bucketWidthMs;
      for (const { bucket, count } of writes) {
        await kvCall((kvStore) =>
          kvStore.reportFailures(service.name, generation, bucket, count, expireInMs)
        );
      }
      const atMs = now();
      const { first, last } = windowBuckets(service.policy, atMs);
      const counts = await kvCall((kvStore) =>
        kvStore.readWindow(service.name, generation, first, last)
      );
      if (generation !== service.fleet.generation) return;
      service.fleetCounts = counts;
      service.fleetCountsGeneration = generation;
      const totals = sumWindow(counts, service.policy, atMs);
      if (
        service.fleet.state === "closed" &&
        shouldTrip(service.policy, totals.failures, totals.reportingInstances)
      ) {
        // Stop sending now; the compare-and-set below costs another round trip.
        if (service.local.state === "closed") applyLocal(service, { type: "trip" }, atMs);
        const result = await kvCall((kvStore) =>
          kvStore.transition(
            service.name,
            (current) => transition(service.policy, current, { type: "trip" }, now(), random()),
            generation,
          )
        );
        // Won or lost, this is the record now: a loser learns of the winner's open here.
        adopt(service, result);
      }
    }
  }

  function record(
    name: string,
    admission: Admission & { allowed: true },
    outcome: AttemptOutcome,
  ): void {
    const service = services.get(name);
    if (service === undefined) return;
    const kind = classifyOutcome(service.policy, outcome);
    const atMs = now();
    const grant = (admission as Granted)[GRANT];
    const localGeneration = grant?.localGeneration ?? service.local.generation;
    if (admission.probe) {
      if (grant?.scope === "fleet" && grant.lease !== null) {
        if (fleetActive()) {
          recordFleetProbe(service, admission.generation, grant.lease, kind);
        } else {
          // KV went away during the probe: the local breaker carries the fleet's outage on.
          recordLocalProbe(service, service.local.generation, kind, atMs);
        }
      } else {
        recordLocalProbe(service, localGeneration, kind, atMs);
      }
      return;
    }
    if (kind !== "failure") return;
    if (atMs + service.policy.windowMs > alertUntilMs) {
      alertUntilMs = atMs + service.policy.windowMs;
      expediteSync();
    }
    countLocalFailure(service, localGeneration, atMs);
    if (
      fleetActive() && service.fleet.state === "closed" &&
      admission.generation === service.fleet.generation
    ) {
      countFleetFailure(service, atMs);
    }
  }

  // ---- views and operator actions --------------------------------------------------------

  function view(name: string): BreakerView {
    const service = serviceOf(name);
    const atMs = now();
    const record = governing(service);
    const state = stateAt(record, atMs);
    observe(service, state, atMs);
    let failuresInWindow = countFailures(service.localFailures, service.policy, atMs);
    if (fleetActive() && service.fleetCountsGeneration === service.fleet.generation) {
      const fleetFailures = sumWindow(service.fleetCounts, service.policy, atMs).failures;
      failuresInWindow = Math.max(failuresInWindow, fleetFailures);
    }
    return {
      service: name,
      state,
      failuresInWindow,
      failureThreshold: service.policy.failureThreshold,
      openedAt: record.openedAt,
      nextProbeAt: record.state === "open" ? record.probeAt : null,
      generation: fleetActive() ? service.fleet.generation : service.local.generation,
      openCount: record.openCount,
      degraded: isDegraded,
    };
  }

  async function force(name: string, action: ForceAction): Promise<BreakerView> {
    const service = serviceOf(name);
    const event: BreakerEvent = { type: "force", action };
    if (fleetActive()) {
      try {
        const result = await kvCall((kvStore) =>
          kvStore.transition(
            name,
            (current) => transition(service.policy, current, event, now(), random()),
          )
        );
        if (result.outcome === "committed") {
          adopt(service, result);
          return view(name);
        }
      } catch {
        // Degraded now: fall through and act on this instance at least.
      }
    }
    applyLocal(service, event, now());
    return view(name);
  }

  // ---- sync, watch, lifecycle ------------------------------------------------------------

  function startWatch(): void {
    if (store === null || watch !== null || closed || names.length === 0) return;
    const watched = store;
    const handle = watched.watchRecords(
      names,
      (name, entry) => {
        if (store === watched && fleetActive()) adopt(services.get(name)!, entry);
      },
      () => {
        if (store !== watched) return;
        if (watch === handle) watch = null;
        enterDegraded();
        reopenNeeded = true;
      },
    );
    watch = handle;
  }

  async function stopWatch(): Promise<void> {
    const running = watch;
    watch = null;
    await running?.close();
  }

  async function reopen(): Promise<void> {
    if (options.reopenKv === undefined || !reopenNeeded) return;
    const atMs = now();
    if (atMs < nextReopenAtMs) return;
    nextReopenAtMs = atMs + reopenIntervalMs;
    let fresh: Deno.Kv;
    try {
      fresh = await withTimeout(options.reopenKv(), kvTimeoutMs);
    } catch {
      return;
    }
    if (closed) {
      fresh.close();
      return;
    }
    await stopWatch();
    const previous = ownedKv;
    kv = fresh;
    ownedKv = fresh;
    store = makeStore(fresh);
    reopenNeeded = false;
    if (previous !== null) {
      try {
        previous.close();
      } catch {
        // Already closed.
      }
    }
  }

  /** Re-reads every record; the way back from degraded mode. Never throws. */
  async function sync(): Promise<void> {
    if (closed) return;
    if (isDegraded) await reopen();
    const current = store;
    if (current === null || closed) return;
    let entries: StoredEntry[];
    try {
      entries = await kvCall((kvStore) => kvStore.readRecords(names));
    } catch {
      return;
    }
    if (closed || current !== store) return;
    if (isDegraded) rejoin();
    entries.forEach((entry, index) => adopt(services.get(names[index])!, entry));
    startWatch();
  }

  function scheduleSync(): void {
    if (closed) return;
    const delayMs = now() < alertUntilMs ? alertSyncIntervalMs : syncIntervalMs;
    syncDueAtMs = now() + delayMs;
    syncTimer = setTimeout(() => {
      syncTimer = undefined;
      syncDueAtMs = Infinity;
      const task = sync().finally(scheduleSync);
      background.add(task);
      task.finally(() => background.delete(task));
    }, delayMs);
  }

  /** Moves a pending slow re-sync forward once failures start (alert mode). */
  function expediteSync(): void {
    if (closed || syncTimer === undefined) return;
    if (syncDueAtMs - now() <= alertSyncIntervalMs) return;
    clearTimeout(syncTimer);
    syncTimer = undefined;
    scheduleSync();
  }

  async function start(): Promise<void> {
    if (started || closed) return;
    started = true;
    if (kv === null && options.reopenKv !== undefined) {
      // The owner hands over an opener instead of a handle: open it now, and when that fails
      // (file locked, server down) serve degraded and keep trying in the background.
      try {
        const opened = await withTimeout(options.reopenKv(), kvTimeoutMs);
        if (closed) {
          opened.close();
          return;
        }
        kv = opened;
        ownedKv = opened;
      } catch {
        enterDegraded();
        reopenNeeded = true;
        scheduleSync();
        return;
      }
    }
    if (kv !== null) {
      store = makeStore(kv);
      await sync();
      scheduleSync();
    }
  }

  async function shutdown(): Promise<void> {
    closed = true;
    clearTimeout(syncTimer);
    syncTimer = undefined;
    await stopWatch();
    // Loops re-check `closed`; wait until every background KV call settled.
    while (background.size > 0) await Promise.allSettled([...background]);
    clearTimeout(syncTimer);
    if (ownedKv !== null) {
      try {
        ownedKv.close();
      } catch {
        // Already closed.
      }
      ownedKv = null;
    }
  }

  for (const service of services.values()) refresh(service);

  return {
    start,
    admit,
    record,
    view,
    views: () => names.map(view),
    force,
    degraded: () => isDegraded,
    close() {
      closing ??= shutdown();
      return closing;
    },
  };
}
