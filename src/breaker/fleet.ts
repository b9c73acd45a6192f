/**
 * The fleet-shared breaker: one breaker per service for every gateway instance, kept in Deno KV,
 * decided from memory.
 *
 * Two layers per service, both driven by the pure state machine in `policy.ts`:
 *
 * - the **fleet record**: this instance's copy of `["breakwater", "breaker", service]`. It only
 *   changes by reading KV (start-up, `kv.watch`, a `getMany` every `syncIntervalMs`, the result
 *   of our own compare-and-set). While it is not `closed` it decides alone.
 * - the **local breaker** (`local_breaker.ts`): this instance's own breaker over its own
 *   failures. It decides while the fleet record is closed, and alone while KV is unavailable
 *   (degraded) or absent.
 *
 * As in cockatiel (github.com/connor4312/cockatiel), the rule for opening is kept apart from
 * the breaker's lifecycle: `local_breaker.ts` (own failures in a sliding window) and
 * `fleet_counts.ts` (every instance's counts in KV, and how far past the threshold a fleet can
 * go) only say "trip"; `probe_leases.ts` runs the half-open round across the fleet;
 * `kv_session.ts` connects, re-syncs, watches, and decides when KV is degraded. This module
 * composes them and owns the lifecycle: `admit`, `record`, `view`, `force`, and adopting
 * records read from KV.
 *
 * `admit()` reads those two records and two small arrays; it never awaits. KV work (failure
 * reports, trip and probe CAS, lease races, re-sync) runs in the background, each call limited
 * to `kvTimeoutMs`; any failure flips the instance to degraded, and a later successful re-sync
 * rejoins the fleet.
 *
 * How the trip stays bounded as the fleet grows (`hold.ts` has the reasoning and the figures):
 * a failure holds this instance's calls to the service until the fleet has counted it (the
 * hold-back), and every failure report rewrites the service's pulse key, which instances read
 * with the records (and watch, where watch works) so they read the fleet's count at once.
 *
 * Every fleet transition and operator action is written to the audit timeline (`audit.ts`) in
 * the same commit as the change.
 *
 * @module
 */
import type { BreakerConfig } from "../config/schema.ts";
import {
  type AuditEntry,
  type AuditKind,
  clampLimit,
  cleanLabel,
  createLocalAudit,
  DEFAULT_AUDIT_RETENTION_MS,
  forceKind,
  type LocalAudit,
  recentAudit,
  rememberAudit,
} from "./audit.ts";
import type { FleetKvAccess, FleetKvCompanion } from "./companion.ts";
import {
  addOwnFailure,
  confirmFailures,
  createFleetCounts,
  dropUnreported,
  type FleetCounts,
  fleetFailuresInWindow,
  holdUntilCounted,
  knownTotalReached,
  noteWindowRead,
  othersInWindow,
  readRound,
  reportRound,
  resetFleetCounts,
  unconfirmed,
  type WindowRead,
} from "./fleet_counts.ts";
import {
  activityDue,
  activityKnown,
  createFleetActivity,
  exchangeActivity,
  type FleetActivity,
  othersSending,
} from "./fleet_activity.ts";
import {
  beat,
  createHeartbeatState,
  describeFleet,
  type FleetSnapshot,
  heartbeatDue,
  type HeartbeatState,
  markStopped,
  noteDegraded,
  readHeartbeats,
} from "./fleet_view.ts";
import { HOLD_RETRY_AFTER_MS, HOT_MS, MAX_SETTLE_MS, nearThreshold } from "./hold.ts";
import { createKvSession, type KvSession } from "./kv_session.ts";
import type {
  AuditNote,
  BreakerStore,
  Lease,
  Pulse,
  StoredEntry,
  TransitionResult,
} from "./kv_store.ts";
import {
  countLocalFailure,
  createLocalBreaker,
  finishLocalProbe,
  type LocalBreaker,
  localFailuresInWindow,
  restartLocal,
  setLocalRecord,
  startLocalProbe,
} from "./local_breaker.ts";
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
import {
  createProbeLeases,
  dropLeases,
  keepLeasesOf,
  type ProbeLeases,
  releaseLease,
  requestLease,
  takeLease,
} from "./probe_leases.ts";
import type {
  Admission,
  AttemptOutcome,
  BreakerState,
  BreakerView,
  TransitionEvent,
} from "./types.ts";

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
  /**
   * True when `kv.watch` delivers other instances' writes (a KV Connect server, Deno Deploy's
   * KV). Then records and pulses arrive by watch at once, so an outage does not switch this
   * instance to fast polling (which would load a remote KV with a read every
   * `alertSyncIntervalMs` per instance just when it is busiest). Default false: a SQLite file
   * shared by processes, whose watch does not see the other processes.
   */
  watchIsShared?: boolean;
  /** A KV call slower than this counts as KV trouble -> degraded. Default 1000. */
  kvTimeoutMs?: number;
  /** Called for every state change this instance observes (metrics, logs). Must not throw. */
  onTransition?: (event: TransitionEvent) => void;
  /**
   * Called when this instance leaves the fleet for its local breakers (`degraded: true`: KV
   * failed or was too slow) and when it rejoins (`false`), so operators see it in the log.
   * Must not throw.
   */
  onKvStateChange?: (degraded: boolean) => void;
  /**
   * How long a probe slot stays taken: longer than the service's whole request time
   * (`timeoutMs`), or a second probe could start while the first still runs. Default 15000.
   */
  probeLeaseMs?: number;
  /**
   * Opens a fresh KV handle. When given, a degraded instance whose KV calls fail (not merely
   * time out) calls it every `reopenIntervalMs` until a handle answers, then rejoins. Handles it
   * returns belong to the breaker and are closed by `close()` (unless `kvIsLent`).
   */
  reopenKv?: (stale: Deno.Kv | null) => Promise<Deno.Kv>;
  /**
   * The handles `reopenKv` returns are lent, not given: several breakers (the generations of a
   * gateway during a reload) share one, and only the lender closes it. `reopenKv` then gets
   * the handle that failed (null at start-up) and opens a new one only when that is still the
   * current one. Default false.
   */
  kvIsLent?: boolean;
  /** Pause between `reopenKv` attempts. Default 1000. */
  reopenIntervalMs?: number;
  /** Wraps the KV store (tests count its calls with it). */
  wrapStore?: (store: BreakerStore) => BreakerStore;
  /**
   * Hold-back (default true): a failure that, with one more from every other instance sending
   * to the service, would take the fleet's known total to `failureThreshold` stops this
   * instance's new calls to the service until the fleet has counted it (one KV report and
   * read). A fleet of any size then adds about one failure per instance before the trip
   * reaches it. The cost: while such a failure is being counted (about one KV round trip), the
   * service's other requests on this instance are answered 503 `breaker_open` (state
   * `half_open`). An instance alone with the service never holds. A service whose breaker
   * policy carries its own `holdBack` boolean uses that instead. See `hold.ts`.
   */
  holdBack?: boolean;
  /** How often the services each instance is sending to are exchanged. Default 1000. */
  activityIntervalMs?: number;
  /**
   * Called for every audit entry this instance makes (fleet transitions it committed, probes it
   * won, operator actions through it), for the log. Must not throw.
   */
  onAudit?: (entry: AuditEntry) => void;
  /** How long audit entries stay in KV. Default 7 days. */
  auditRetentionMs?: number;
  /** How often this instance writes its heartbeat for the fleet view (`fleet_view.ts`). Default 2000. */
  heartbeatIntervalMs?: number;
  /**
   * The fleet retry budgets (`createFleetRetryBudgets` in `src/retry/fleet_budget.ts`): they
   * exchange their counts through this breaker's KV session, in its rhythm.
   */
  retryBudgets?: FleetKvCompanion;
}

/** Options of {@link FleetBreaker.force}. */
export interface ForceOptions {
  /** Who asks, for the audit timeline (a user, a tool). Default "admin". */
  by?: string;
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
  /** Operator action for the whole fleet: "open" -> forced_open, "close" -> forced_closed, "reset" -> closed with a new generation and no force. Recorded in the audit timeline with `options.by` (default "admin"). While degraded it applies to this instance only (the view says `degraded`; the audit entry is only logged). */
  force(
    service: string,
    action: "open" | "close" | "reset",
    options?: ForceOptions,
  ): Promise<BreakerView>;
  /**
   * The audit timeline, newest first: operator actions and fleet transitions (trip, probe,
   * reopen, close) of `service` (or of every service), at most `limit` (default 100, at most
   * 1000). Read from KV; while KV is unavailable, the entries this instance made.
   */
  audit(service?: string, limit?: number): Promise<AuditEntry[]>;
  /**
   * The instances of the fleet by their heartbeats (alive, silent, stopped), this one first.
   * While KV is unavailable, only this instance (`known: false`).
   */
  fleet(): Promise<FleetSnapshot>;
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

const TRIP: BreakerEvent = Object.freeze({ type: "trip" });

/** Everything one service's breaker keeps in memory. */
interface ServiceBreaker {
  readonly name: string;
  readonly policy: BreakerConfig;
  /** Our copy of the fleet record, and the versionstamp it was read at. */
  fleet: BreakerRecord;
  fleetVersion: string | null;
  /** This instance's own breaker. */
  readonly local: LocalBreaker;
  /** Our failure counts for the fleet, and the fleet's as last read. */
  readonly counts: FleetCounts;
  /** Fleet probe slots we won and have not handed to a request yet. */
  readonly leases: ProbeLeases;
  /** The state last reported through onTransition. */
  lastState: BreakerState;
  /** The admission every non-probe request gets (allocated once per change). */
  pass: Granted;
  /** Hold-back: our failures are being counted by the fleet; new calls wait (see hold.ts). */
  holding: boolean;
  /** Until then (epoch ms) the fleet may be tripping: the window is re-read at every re-sync. */
  hotUntilMs: number;
  /** The versionstamp of the last pulse seen. */
  pulseVersion: string | null;
  /** A compare-and-set opening the fleet record is in flight. */
  tripping: boolean;
  /** An attempt was recorded since the last activity exchange (see fleet_activity.ts). */
  busy: boolean;
}

/** The rejection of a request while a failure is being counted (allocated once). */
const HELD: Admission = Object.freeze({
  allowed: false,
  retryAfterMs: HOLD_RETRY_AFTER_MS,
  state: "half_open",
});

/** One gateway instance's breaker: its services, its KV session, its settings. */
interface Fleet {
  readonly instanceId: string;
  readonly now: () => number;
  readonly random: () => number;
  readonly probeLeaseMs: number;
  readonly onTransition: ((event: TransitionEvent) => void) | undefined;
  readonly onAudit: ((entry: AuditEntry) => void) | undefined;
  readonly holdBack: boolean;
  readonly activity: FleetActivity;
  /** The fastest failure report this instance has made: a much slower one means contention. */
  fastestWriteMs: number;
  readonly auditRetentionMs: number;
  readonly localAudit: LocalAudit;
  /** This instance's heartbeat for the fleet view. */
  readonly heartbeat: HeartbeatState;
  readonly services: Map<string, ServiceBreaker>;
  /** Service names in configuration order. */
  readonly names: readonly string[];
  readonly session: KvSession;
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
  const probeLeaseMs = options.probeLeaseMs ?? 15000;
  const services = new Map<string, ServiceBreaker>();
  for (const [name, policy] of Object.entries(options.services)) {
    services.set(name, createServiceBreaker(name, policy, probeLeaseMs, syncIntervalMs));
  }
  const names = [...services.keys()];
  const auditRetentionMs = options.auditRetentionMs ?? DEFAULT_AUDIT_RETENTION_MS;
  const companion = options.retryBudgets;
  const session = createKvSession({
    kv: options.kv,
    reopenKv: options.reopenKv,
    kvIsLent: options.kvIsLent,
    names,
    instanceId: options.instanceId,
    now,
    random,
    syncIntervalMs,
    alertSyncIntervalMs: options.watchIsShared
      ? syncIntervalMs
      : Math.min(syncIntervalMs, options.alertSyncIntervalMs ?? 10),
    kvTimeoutMs: options.kvTimeoutMs ?? 1000,
    reopenIntervalMs: options.reopenIntervalMs ?? 1000,
    auditRetentionMs,
    wrapStore: options.wrapStore,
    onEntry: (name, entry) => adopt(fleet, services.get(name)!, entry),
    onDegraded: () => {
      noteDegraded(fleet.heartbeat, true, now());
      carryOutagesLocally(fleet);
      options.onKvStateChange?.(true);
    },
    onRejoin: () => {
      noteDegraded(fleet.heartbeat, false, now());
      options.onKvStateChange?.(false);
      // Versionstamps from before the trouble may come from another handle (or another store
      // behind the same path): accept whatever KV says now.
      for (const service of services.values()) {
        service.fleetVersion = null;
        service.pulseVersion = null;
      }
    },
    onSync: async () => {
      // Where watch is shared, pulses arrive by watch and each starts its own read.
      if (!options.watchIsShared) await readHotWindows(fleet);
      await exchangeBusy(fleet);
      // Checked here so that a re-sync every 10 ms in an outage costs no KV call for it.
      if (heartbeatDue(fleet.heartbeat, now())) {
        await session.callKv((kv) => beat(fleet.heartbeat, kv, now(), random));
      }
      if (companion !== undefined) await companion.sync(access);
    },
  });
  const fleet: Fleet = {
    instanceId: options.instanceId,
    now,
    random,
    probeLeaseMs,
    onTransition: options.onTransition,
    onAudit: options.onAudit,
    holdBack: options.holdBack ?? true,
    fastestWriteMs: Infinity,
    activity: createFleetActivity(options.activityIntervalMs ?? 1000),
    auditRetentionMs,
    localAudit: createLocalAudit(),
    heartbeat: createHeartbeatState(
      options.instanceId,
      names,
      now(),
      options.heartbeatIntervalMs,
    ),
    services,
    names,
    session,
  };
  for (const service of services.values()) refresh(fleet, service);
  const access: FleetKvAccess = {
    instanceId: options.instanceId,
    now,
    active: () => session.active(),
    call: (operation) => session.callKv(operation),
  };
  return {
    start() {
      companion?.attach(access);
      return session.start();
    },
    admit: (name) => admit(fleet, name),
    record: (name, admission, outcome) => record(fleet, name, admission, outcome),
    view: (name) => view(fleet, name),
    views: () => names.map((name) => view(fleet, name)),
    force: (name, action, forceOptions) => force(fleet, name, action, forceOptions?.by),
    audit: (name, limit) => readAudit(fleet, name, limit),
    fleet: () => readFleet(fleet),
    degraded: () => session.degraded(),
    async close() {
      companion?.detach(access);
      if (session.active()) {
        // A clean stop, so the fleet view does not count this instance as silent.
        await session.callKv((kv) => markStopped(fleet.heartbeat, kv, now(), random))
          .catch(() => {});
      }
      await session.close();
    },
  };
}

function createServiceBreaker(
  name: string,
  policy: BreakerConfig,
  probeLeaseMs: number,
  syncIntervalMs: number,
): ServiceBreaker {
  return {
    name,
    policy,
    fleet: INITIAL_RECORD,
    fleetVersion: null,
    local: createLocalBreaker(),
    counts: createFleetCounts(policy),
    // A lost lease race is retried after a re-sync, not on every rejected request.
    leases: createProbeLeases(name, policy.halfOpenProbes, probeLeaseMs, syncIntervalMs),
    lastState: "closed",
    pass: { allowed: true, probe: false, generation: 0 },
    holding: false,
    hotUntilMs: -Infinity,
    pulseVersion: null,
    tripping: false,
    busy: false,
  };
}

// ---- the records and what follows a change ---------------------------------------------

function serviceOf(fleet: Fleet, name: string): ServiceBreaker {
  const service = fleet.services.get(name);
  if (service === undefined) throw new Error(`breaker: unknown service "${name}"`);
  return service;
}

/** The record admission decides with: the fleet's while KV is in charge and it is not closed. */
function governing(fleet: Fleet, service: ServiceBreaker): BreakerRecord {
  return fleet.session.active() && service.fleet.state !== "closed"
    ? service.fleet
    : service.local.record;
}

function observe(fleet: Fleet, service: ServiceBreaker, state: BreakerState, atMs: number): void {
  if (state === service.lastState) return;
  const event: TransitionEvent = {
    service: service.name,
    from: service.lastState,
    to: state,
    atMs,
  };
  service.lastState = state;
  if (fleet.onTransition === undefined) return;
  try {
    fleet.onTransition(event);
  } catch {
    // A metrics hook must never break admission.
  }
}

/**
 * Hold-back (see hold.ts): some of our failures are not yet counted by the fleet, the fleet
 * record is closed and KV is in charge. Degraded instances never hold: the local breaker decides.
 */
function updateHolding(fleet: Fleet, service: ServiceBreaker): void {
  service.holding = fleet.session.active() && service.fleet.state === "closed" &&
    unconfirmed(service.counts);
}

/** Rebuilds the cached pass admission and reports the state, after any record changed. */
function refresh(fleet: Fleet, service: ServiceBreaker): void {
  updateHolding(fleet, service);
  const localGeneration = service.local.record.generation;
  service.pass = {
    allowed: true,
    probe: false,
    generation: fleet.session.active() ? service.fleet.generation : localGeneration,
    [GRANT]: { scope: "none", localGeneration, lease: null },
  };
  const atMs = fleet.now();
  observe(fleet, service, stateAt(governing(fleet, service), atMs), atMs);
}

function applyLocal(
  fleet: Fleet,
  service: ServiceBreaker,
  event: BreakerEvent,
  atMs: number,
): void {
  const next = transition(service.policy, service.local.record, event, atMs, fleet.random());
  if (setLocalRecord(service.local, next)) refresh(fleet, service);
}

/** Takes a record read from KV if it is newer than ours; notes a new pulse. */
function adopt(fleet: Fleet, service: ServiceBreaker, entry: StoredEntry): void {
  if (entry.pulse) notePulse(fleet, service, entry.pulse);
  // A missing record is the initial one, which we start from anyway.
  if (entry.versionstamp === null) return;
  if (service.fleetVersion !== null && entry.versionstamp <= service.fleetVersion) return;
  const previous = service.fleet;
  service.fleet = entry.record;
  service.fleetVersion = entry.versionstamp;
  if (entry.record.generation !== previous.generation) {
    // A new fleet generation: counts start from zero, and a fleet-wide close or an operator
    // action ends whatever this instance's local breaker was doing.
    restartLocal(service.local, INITIAL_RECORD);
    keepLeasesOf(service.leases, entry.record.generation);
    resetFleetCounts(service.counts, entry.record.generation);
  }
  refresh(fleet, service);
}

/**
 * Another instance reported failures of the current generation: take the counts its pulse
 * carries (opening here at once if the fleet total reached the threshold), and read the whole
 * window now and at every re-sync while the service stays hot (watch may have skipped a pulse).
 */
function notePulse(fleet: Fleet, service: ServiceBreaker, pulse: Pulse): void {
  if (pulse.versionstamp === service.pulseVersion) return;
  service.pulseVersion = pulse.versionstamp;
  if (pulse.instanceId === fleet.instanceId || pulse.generation !== service.fleet.generation) {
    return;
  }
  if (service.fleet.state !== "closed" || service.counts.generation !== pulse.generation) return;
  const atMs = fleet.now();
  const read: WindowRead = {
    generation: pulse.generation,
    atMs,
    counts: pulse.counts.map(([bucket, count]) => ({
      bucket,
      instanceId: pulse.instanceId,
      count,
    })),
    seq: -1,
    writeMs: 0,
  };
  if (takeRead(fleet, service, read).reached) {
    fleet.session.inBackground(() => tripFleet(fleet, service, read));
  }
  // A pulse found at start-up (or on rejoining) may be old news; a recent one is not.
  if (pulse.atMs < atMs - HOT_MS) return;
  heatUp(fleet, service, atMs);
  readFleetWindow(fleet, service);
}

/** Marks a service hot: its window is re-read at every re-sync, at the alert interval. */
function heatUp(fleet: Fleet, service: ServiceBreaker, atMs: number): void {
  service.hotUntilMs = Math.max(service.hotUntilMs, atMs + HOT_MS);
  fleet.session.alertUntil(service.hotUntilMs);
}

/** Tells the fleet which services this instance is sending to, and learns the others' (fleet_activity.ts). */
async function exchangeBusy(fleet: Fleet): Promise<void> {
  if (!activityDue(fleet.activity, fleet.now())) return;
  const busy: string[] = [];
  for (const service of fleet.services.values()) {
    if (!service.busy) continue;
    service.busy = false;
    busy.push(service.name);
  }
  const writeMs = await exchangeActivity(
    fleet.activity,
    busy,
    fleet.instanceId,
    fleet.session.call,
    fleet.now,
  );
  if (writeMs !== null) fleet.fastestWriteMs = Math.min(fleet.fastestWriteMs, writeMs);
}

/** Reads the window of every hot, closed service that has no report or read in flight. */
async function readHotWindows(fleet: Fleet): Promise<void> {
  const atMs = fleet.now();
  const reads: Promise<void>[] = [];
  for (const service of fleet.services.values()) {
    if (service.hotUntilMs < atMs || service.fleet.state !== "closed") continue;
    if (service.counts.reporting || service.counts.reading) continue;
    reads.push(readWindowNow(fleet, service));
  }
  await Promise.all(reads);
}

/** Reads the window in the background, single flight (a read asked for meanwhile follows). */
function readFleetWindow(fleet: Fleet, service: ServiceBreaker): void {
  const { counts } = service;
  if (counts.reading) {
    counts.readAgain = true;
    return;
  }
  fleet.session.inBackground(() => readWindowNow(fleet, service));
}

async function readWindowNow(fleet: Fleet, service: ServiceBreaker): Promise<void> {
  const { counts, policy } = service;
  if (counts.reading) return;
  counts.reading = true;
  try {
    do {
      counts.readAgain = false;
      if (!fleet.session.active() || fleet.session.closed()) return;
      if (service.fleet.state !== "closed") return;
      const read = await readRound(counts, policy, service.name, fleet.session.call, fleet.now);
      if (read.generation !== service.fleet.generation) return;
      if (takeRead(fleet, service, read).reached) await tripFleet(fleet, service, read);
    } while (counts.readAgain);
  } finally {
    counts.reading = false;
  }
}

/**
 * Merges what a read (or a pulse) found. `reached`: the fleet total reached the threshold while
 * the record is closed, and this instance has opened for it (the fleet record follows with
 * {@link tripFleet}). `grew`: other instances' failures rose since we last knew them.
 */
function takeRead(
  fleet: Fleet,
  service: ServiceBreaker,
  read: WindowRead,
): { reached: boolean; grew: boolean } {
  const { counts, policy } = service;
  const othersBefore = othersInWindow(counts, policy, fleet.instanceId, read.atMs);
  const totals = noteWindowRead(counts, policy, read);
  const grew = othersInWindow(counts, policy, fleet.instanceId, read.atMs) > othersBefore;
  if (grew) heatUp(fleet, service, read.atMs);
  const reached = service.fleet.state === "closed" &&
    shouldTrip(policy, totals.failures, totals.reportingInstances);
  // Stop sending now; the compare-and-set of the fleet record costs another round trip.
  if (reached && service.local.record.state === "closed") {
    applyLocal(fleet, service, TRIP, read.atMs);
  }
  return { reached, grew };
}

/** Opens the fleet record (single flight per service); the result is adopted, won or lost. */
async function tripFleet(fleet: Fleet, service: ServiceBreaker, read: WindowRead): Promise<void> {
  if (service.tripping || service.fleet.generation !== read.generation) return;
  service.tripping = true;
  try {
    // The count that tripped it goes into the audit entry: the window starts from zero in
    // the new generation, so it is the only place the fleet can read it back from.
    const failures = fleetFailuresInWindow(
      service.counts,
      service.policy,
      read.generation,
      read.atMs,
    );
    const result = await fleetTransition(fleet, service, TRIP, read.generation, {
      atMs: read.atMs,
      by: null,
      failures: failures ?? undefined,
    });
    // Won or lost, this is the record now: a loser learns of the winner's open here.
    adopt(fleet, service, result);
  } finally {
    service.tripping = false;
  }
}

/** KV just went away: the local breakers take over. */
function carryOutagesLocally(fleet: Fleet): void {
  for (const service of fleet.services.values()) {
    // The fleet's outage (or an operator's force) goes on locally: KV trouble must not
    // close a breaker that the fleet holds open.
    if (service.fleet.state !== "closed") restartLocal(service.local, service.fleet);
    dropLeases(service.leases);
    dropUnreported(service.counts);
    service.hotUntilMs = -Infinity;
    refresh(fleet, service);
  }
}

/**
 * A compare-and-set of the fleet record with the state machine, within the KV time limit,
 * written to the audit timeline (in the same commit) when it changes something.
 */
async function fleetTransition(
  fleet: Fleet,
  service: ServiceBreaker,
  event: BreakerEvent,
  expectGeneration: number | undefined,
  audit: AuditNote,
): Promise<TransitionResult> {
  const result = await fleet.session.call((store) =>
    store.transition(
      service.name,
      (current) => transition(service.policy, current, event, fleet.now(), fleet.random()),
      expectGeneration,
      audit,
    )
  );
  if (result.audit !== undefined) emitAudit(fleet, result.audit);
  return result;
}

/** Logs an audit entry this instance made and keeps it for reads while KV is away. */
function emitAudit(fleet: Fleet, entry: AuditEntry): void {
  rememberAudit(fleet.localAudit, entry);
  if (fleet.onAudit === undefined) return;
  try {
    fleet.onAudit(entry);
  } catch {
    // A logging hook must never break the breaker.
  }
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

function halfOpenBusy(): Admission {
  return { allowed: false, retryAfterMs: HALF_OPEN_RETRY_AFTER_MS, state: "half_open" };
}

function admit(fleet: Fleet, name: string): Admission {
  const service = serviceOf(fleet, name);
  const atMs = fleet.now();
  if (fleet.session.active()) {
    const record = service.fleet;
    switch (record.state) {
      case "forced_closed":
        return service.pass;
      case "forced_open":
        return reject(service, record, "forced_open", atMs);
      case "open":
        return admitFleetOpen(fleet, service, atMs);
    }
  }
  const admission = admitLocal(fleet, service, atMs);
  // `holding` is only ever set while KV is in charge and the fleet record is closed.
  return admission === service.pass && service.holding ? HELD : admission;
}

/** An open fleet record: rejected until the probe time, then only lease holders probe. */
function admitFleetOpen(fleet: Fleet, service: ServiceBreaker, atMs: number): Admission {
  const record = service.fleet;
  if (!isProbeDue(record, atMs)) return reject(service, record, "open", atMs);
  observe(fleet, service, "half_open", atMs);
  const lease = takeLease(service.leases, record.generation, atMs);
  if (lease === null) {
    requestLease(
      service.leases,
      fleet.session,
      record.generation,
      atMs,
      fleet.now,
      (generation) => fleet.session.active() && service.fleet.generation === generation,
      (entry) => emitAudit(fleet, entry),
    );
    return halfOpenBusy();
  }
  const admission: Granted = {
    allowed: true,
    probe: true,
    generation: record.generation,
    [GRANT]: { scope: "fleet", localGeneration: service.local.record.generation, lease },
  };
  return admission;
}

function admitLocal(fleet: Fleet, service: ServiceBreaker, atMs: number): Admission {
  const local = service.local.record;
  switch (local.state) {
    case "closed":
    case "forced_closed":
      return service.pass;
    case "forced_open":
      return reject(service, local, "forced_open", atMs);
    case "open": {
      if (!isProbeDue(local, atMs)) return reject(service, local, "open", atMs);
      observe(fleet, service, "half_open", atMs);
      if (!startLocalProbe(service.local, service.policy, atMs, fleet.probeLeaseMs)) {
        return halfOpenBusy();
      }
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

// ---- outcomes --------------------------------------------------------------------------

function record(
  fleet: Fleet,
  name: string,
  admission: Admission & { allowed: true },
  outcome: AttemptOutcome,
): void {
  const service = fleet.services.get(name);
  if (service === undefined) return;
  service.busy = true;
  const kind = classifyOutcome(service.policy, outcome);
  const atMs = fleet.now();
  const grant = (admission as Granted)[GRANT];
  const localGeneration = grant?.localGeneration ?? service.local.record.generation;
  if (admission.probe) {
    if (grant?.scope === "fleet" && grant.lease !== null) {
      if (fleet.session.active()) {
        recordFleetProbe(fleet, service, admission.generation, grant.lease, kind);
      } else {
        // KV went away during the probe: the local breaker carries the fleet's outage on.
        recordLocalProbe(fleet, service, service.local.record.generation, kind, atMs);
      }
    } else {
      recordLocalProbe(fleet, service, localGeneration, kind, atMs);
    }
    return;
  }
  if (kind !== "failure") return;
  fleet.session.alertUntil(atMs + service.policy.windowMs);
  if (countLocalFailure(service.local, service.policy, localGeneration, atMs)) {
    applyLocal(fleet, service, TRIP, atMs);
  }
  if (
    fleet.session.active() && service.fleet.state === "closed" &&
    admission.generation === service.fleet.generation
  ) {
    countFleetFailure(fleet, service, atMs);
  }
}

function recordLocalProbe(
  fleet: Fleet,
  service: ServiceBreaker,
  localGeneration: number,
  kind: OutcomeKind,
  atMs: number,
): void {
  finishLocalProbe(service.local);
  if (kind === "ignored") return;
  const type = kind === "success" ? "probe_success" : "probe_failure";
  applyLocal(fleet, service, { type, generation: localGeneration }, atMs);
}

function recordFleetProbe(
  fleet: Fleet,
  service: ServiceBreaker,
  generation: number,
  lease: Lease,
  kind: OutcomeKind,
): void {
  if (kind === "ignored") {
    // The client went away: nothing learned, so let the next request probe instead.
    releaseLease(service.leases, fleet.session, lease);
    return;
  }
  if (generation !== service.fleet.generation) return;
  const type = kind === "success" ? "probe_success" : "probe_failure";
  const audit: AuditNote = { atMs: fleet.now(), by: null };
  fleet.session.inBackground(async () => {
    adopt(
      fleet,
      service,
      await fleetTransition(fleet, service, { type, generation }, generation, audit),
    );
  });
}

/**
 * The service's `holdBack` when its policy has one (a per-service config key), else the
 * instance's option.
 */
function holdsBack(fleet: Fleet, policy: BreakerConfig): boolean {
  const own = (policy as { holdBack?: unknown }).holdBack;
  return typeof own === "boolean" ? own : fleet.holdBack;
}

/**
 * Counts a failure for the fleet: holds new calls until the fleet has counted it (hold.ts),
 * opens locally at once when the known total reached the threshold, and reports it.
 */
function countFleetFailure(fleet: Fleet, service: ServiceBreaker, atMs: number): void {
  const { counts, policy } = service;
  const generation = service.fleet.generation;
  addOwnFailure(counts, policy, generation, atMs);
  if (
    holdsBack(fleet, policy) &&
    nearThreshold(
      counts,
      policy,
      fleet.instanceId,
      atMs,
      othersSending(fleet.activity, service.name, atMs),
    )
  ) holdUntilCounted(counts);
  updateHolding(fleet, service);
  heatUp(fleet, service, atMs);
  // Opening on the known total saves the report and the CAS on the request path. The fleet
  // trip follows in the background; adopting it restarts the local breaker, so the fleet's
  // record (one probeAt for everyone) takes over.
  if (
    service.local.record.state === "closed" &&
    knownTotalReached(counts, policy, fleet.instanceId, generation, atMs)
  ) {
    applyLocal(fleet, service, TRIP, atMs);
  }
  if (!counts.reporting) {
    counts.reporting = true;
    fleet.session.inBackground(() =>
      reportFailures(fleet, service).finally(() => {
        counts.reporting = false;
        // Whatever ended the rounds (KV trouble, a new generation), nothing holds calls now
        // that is not being reported.
        if (counts.dirty.size === 0) counts.confirmedSeq = counts.failureSeq;
        updateHolding(fleet, service);
      })
    );
  }
}

/**
 * Reports our failures round after round, at most one round in flight; trips the fleet when a
 * read reaches the threshold, and ends the hold-back of the failures a round counted (after a
 * settling read when other instances' failures were still arriving; see hold.ts).
 */
async function reportFailures(fleet: Fleet, service: ServiceBreaker): Promise<void> {
  const { counts, policy } = service;
  // Failures that arrive while a report is in flight are taken by the next round: at most one
  // report per service in flight, however fast failures come.
  while (counts.dirty.size > 0 && fleet.session.active() && !fleet.session.closed()) {
    const read = await reportRound(counts, policy, service.name, fleet.session.call, fleet.now);
    if (read.generation !== service.fleet.generation) return;
    let { reached, grew } = takeRead(fleet, service, read);
    // A write much slower than this instance's fastest means others are writing too: their
    // reports queue for KV as ours did. Then, or while the count keeps rising, wait about as
    // long as our write took and look again (bounded) before letting calls go.
    const congested = read.writeMs > 3 * fleet.fastestWriteMs + 5;
    fleet.fastestWriteMs = Math.min(fleet.fastestWriteMs, read.writeMs);
    const settleUntilMs = fleet.now() + MAX_SETTLE_MS;
    while (!reached && (grew || congested) && service.holding && fleet.now() < settleUntilMs) {
      await settle(Math.min(read.writeMs, MAX_SETTLE_MS));
      if (!fleet.session.active() || fleet.session.closed()) return;
      const again = await readRound(counts, policy, service.name, fleet.session.call, fleet.now);
      if (again.generation !== service.fleet.generation) return;
      ({ reached, grew } = takeRead(fleet, service, again));
      if (reached) read.atMs = again.atMs;
      if (!grew) break;
    }
    if (reached) await tripFleet(fleet, service, read);
    confirmFailures(counts, read.seq);
    updateHolding(fleet, service);
  }
}

function settle(delayMs: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(1, delayMs)));
}

// ---- views and operator actions --------------------------------------------------------

function view(fleet: Fleet, name: string): BreakerView {
  const service = serviceOf(fleet, name);
  const atMs = fleet.now();
  const record = governing(fleet, service);
  const state = stateAt(record, atMs);
  observe(fleet, service, state, atMs);
  const active = fleet.session.active();
  let failuresInWindow = localFailuresInWindow(service.local, service.policy, atMs);
  if (active) {
    const fleetFailures = fleetFailuresInWindow(
      service.counts,
      service.policy,
      service.fleet.generation,
      atMs,
    );
    if (fleetFailures !== null) failuresInWindow = Math.max(failuresInWindow, fleetFailures);
  }
  const out: BreakerView = {
    service: name,
    state,
    failuresInWindow,
    failureThreshold: service.policy.failureThreshold,
    openedAt: record.openedAt,
    nextProbeAt: record.state === "open" ? record.probeAt : null,
    generation: active ? service.fleet.generation : service.local.record.generation,
    openCount: record.openCount,
    degraded: fleet.session.degraded(),
  };
  if (active && activityKnown(fleet.activity, atMs)) {
    out.othersSending = othersSending(fleet.activity, name, atMs);
  }
  return out;
}

async function force(
  fleet: Fleet,
  name: string,
  action: ForceAction,
  label: string | undefined,
): Promise<BreakerView> {
  const service = serviceOf(fleet, name);
  const event: BreakerEvent = { type: "force", action };
  const by = cleanLabel(label);
  const kind: AuditKind = forceKind(action);
  if (fleet.session.active()) {
    try {
      const audit: AuditNote = { atMs: fleet.now(), by, kind };
      const result = await fleetTransition(fleet, service, event, undefined, audit);
      if (result.outcome === "committed") {
        adopt(fleet, service, result);
        return view(fleet, name);
      }
    } catch {
      // Degraded now: fall through and act on this instance at least.
    }
  }
  const before = service.local.record;
  const atMs = fleet.now();
  applyLocal(fleet, service, event, atMs);
  emitAudit(fleet, {
    atMs,
    service: name,
    kind,
    instanceId: fleet.instanceId,
    by,
    from: before.state,
    to: service.local.record.state,
    generation: service.local.record.generation,
    fleet: false,
  });
  return view(fleet, name);
}

async function readAudit(
  fleet: Fleet,
  name: string | undefined,
  limit: number | undefined,
): Promise<AuditEntry[]> {
  if (name !== undefined) serviceOf(fleet, name);
  const count = clampLimit(limit);
  if (fleet.session.active()) {
    const sinceMs = fleet.now() - fleet.auditRetentionMs;
    try {
      return await fleet.session.call((store) => store.readAudit(name, count, sinceMs));
    } catch {
      // Degraded now: what this instance made is all there is to show.
    }
  }
  return recentAudit(fleet.localAudit, name, count);
}

async function readFleet(fleet: Fleet): Promise<FleetSnapshot> {
  let heartbeats = null;
  if (fleet.session.active()) {
    try {
      heartbeats = await fleet.session.callKv((kv) => readHeartbeats(kv, fleet.random));
    } catch {
      // Degraded now: this instance is all it knows of.
    }
  }
  return describeFleet(heartbeats, fleet.heartbeat, fleet.session.degraded(), fleet.now());
}
