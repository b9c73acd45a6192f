/**
 * A retry budget for the whole fleet: `budgetPercent` of the fleet's requests in the last
 * `windowMs` plus ONE floor of `minRetriesPerSecond`, however many instances there are.
 *
 * A per-instance budget (`createRetryBudget` in `policy.ts`) pays its floor once per instance:
 * behind 100 instances a dead upstream receives 300 extra retries a second from the floors
 * alone, whatever the percentage says. Here each instance still decides alone and from memory
 * (no KV call per request or per retry), with numbers it exchanges in the background:
 *
 * - it counts its own requests and retries per time bucket (`windowMs / 10`, aligned on the
 *   wall clock so every instance's buckets line up), exactly, in memory;
 * - every `exchangeIntervalMs` (at a re-sync of the fleet breaker, on its KV session) it writes
 *   the buckets that changed, `["breakwater", "retry", service, bucket, instanceId]` ->
 *   `[requests, retries]` with `expireIn`, and lists the window's buckets of every instance;
 * - a retry is allowed while its own retries stay within its share of the fleet's budget, the
 *   share being its share of the fleet's requests, `requests_i x budgetPercent + floor x
 *   requests_i / fleet requests` (rounded down, but at least one, so a quiet service spread
 *   thin still retries now and then; a share raised to one is allowed only while the fleet's
 *   retries it knows of stay within the fleet's budget).
 *
 * Bounds. Shares add up to the fleet's budget, so in a storm (every instance spending its whole
 * share) the fleet sends at most `budgetPercent` of its requests plus one floor (the "at least
 * one" can add one retry per instance per window only where shares are below one, and the
 * fleet total known at the last exchange then caps it). Other instances' counts are up to one
 * exchange old (1 s by default); the floor is split by the counts every instance had published
 * whole at the last read (buckets that ended an exchange before it), so the shares still add up
 * to one floor while a storm ramps up. When the traffic mix shifts, a share
 * already spent is not taken back: the fleet can go over by what the shift moved, for one
 * window. The fleet total caps only the shares raised to one: in a storm, the others' retries
 * are known up to their last exchange (spent as soon as the window frees them) but their
 * requests only partly (they keep arriving after it), so a cap on every retry would hold the
 * whole fleet well below its budget (measured: 14 retries/s where 23 were due).
 *
 * While KV is degraded, before the first exchange, or when the last one is older than the
 * window, each instance falls back to the per-instance budget (its own percentage plus the
 * whole floor): a fleet that cannot talk retries as it did before, never less.
 *
 * @module
 */
import { retryWhenLocked } from "../breaker/_kv_retry.ts";
import type { FleetKvAccess, FleetKvCompanion } from "../breaker/companion.ts";
import type { RetryBudget } from "./policy.ts";

/** A service's budget settings (the `retry` config keys of the same names). */
export interface FleetRetryBudgetOptions {
  /** Retries may add at most this share of the fleet's recent requests, in percent. */
  budgetPercent: number;
  /** One floor for the whole fleet, per second. */
  minRetriesPerSecond: number;
}

/** Options of {@link createFleetRetryBudgets}. */
export interface FleetRetryBudgetsOptions {
  /** How far back "recent" reaches (default 10 s, as Envoy and Finagle). */
  windowMs?: number;
  /** How often counts are written and the fleet's read. Default 1000. */
  exchangeIntervalMs?: number;
  /** The clock (epoch ms) until the breaker lends its own. Default `Date.now`. */
  now?: () => number;
}

/** What {@link FleetRetryBudget.snapshot} shows (admin view, tests). */
export interface FleetRetrySnapshot {
  /** This instance's first attempts in the window. */
  requests: number;
  /** This instance's retries in the window. */
  retries: number;
  /** Retries this instance may make in the window (its share, or its own budget). */
  allowedRetries: number;
  /** True when the fleet's numbers decide; false while falling back to the per-instance budget. */
  fleet: boolean;
  /** The fleet's first attempts in the window as known (this instance's when not `fleet`). */
  fleetRequests: number;
  /** The fleet's retries in the window as known. */
  fleetRetries: number;
  /** The fleet's budget in the window. */
  fleetAllowedRetries: number;
}

/** One service's fleet-wide budget: the {@link RetryBudget} interface, decided from memory. */
export interface FleetRetryBudget extends RetryBudget {
  /** This instance's and the fleet's counts in the window. */
  snapshot(): FleetRetrySnapshot;
}

/** Every service's fleet budget of one instance, exchanged on the fleet breaker's KV session. */
export interface FleetRetryBudgets extends FleetKvCompanion {
  /** The budget of `service` (created on first use; one per service). */
  budget(service: string, options: FleetRetryBudgetOptions): FleetRetryBudget;
}

/** Buckets per window (as the per-instance budget and the breaker's fleet window). */
const BUCKETS = 10;
/** Slots of the in-memory ring: the window plus the bucket being published late. */
const RING = BUCKETS + 2;
/** Deno KV allows 1000 mutations per commit; stay well below. */
const WRITES_PER_COMMIT = 200;

/** The KV key of one instance's counts in one bucket. */
export function retryCountKey(service: string, bucket: number, instanceId: string): Deno.KvKey {
  return ["breakwater", "retry", service, bucket, instanceId];
}

/** Counts per bucket, in a ring indexed by `bucket % RING`. */
interface Ring {
  ids: number[];
  requests: number[];
  retries: number[];
  dirty: boolean[];
}

interface ServiceBudget {
  readonly name: string;
  /** Settings as last configured: a reload that changes them keeps the counts. */
  budgetPercent: number;
  floorPerWindow: number;
  readonly own: Ring;
  /** Other instances' counts per bucket as last read. */
  others: Map<number, { requests: number; retries: number }>;
  /** When `others` was read (epoch ms); -Infinity before the first read. */
  readAtMs: number;
  /**
   * Our own requests in the window when `others` was read: shares are taken between numbers of
   * the same age, so they add up to the whole (others' counts lag ours by an exchange).
   */
  ownAtRead: number;
}

interface Budgets {
  readonly windowMs: number;
  readonly bucketMs: number;
  readonly exchangeIntervalMs: number;
  readonly services: Map<string, ServiceBudget>;
  clock: () => number;
  /** The breaker lending its KV session now; null before the first and after the last. */
  access: FleetKvAccess | null;
  nextExchangeAtMs: number;
}

function createRing(): Ring {
  return {
    ids: new Array(RING).fill(-1),
    requests: new Array(RING).fill(0),
    retries: new Array(RING).fill(0),
    dirty: new Array(RING).fill(false),
  };
}

/** The ring slot of `bucket`, cleared when it still holds an older bucket. */
function slot(ring: Ring, bucket: number): number {
  const index = ((bucket % RING) + RING) % RING;
  if (ring.ids[index] !== bucket) {
    ring.ids[index] = bucket;
    ring.requests[index] = 0;
    ring.retries[index] = 0;
    ring.dirty[index] = false;
  }
  return index;
}

/** Own requests and retries in the window ending in `bucket`. */
function ownInWindow(ring: Ring, bucket: number): { requests: number; retries: number } {
  let requests = 0;
  let retries = 0;
  for (let index = 0; index < RING; index++) {
    const id = ring.ids[index];
    if (id > bucket - BUCKETS && id <= bucket) {
      requests += ring.requests[index];
      retries += ring.retries[index];
    }
  }
  return { requests, retries };
}

/**
 * Creates the fleet retry budgets of one gateway instance. Hand the result to
 * `createFleetBreaker({ retryBudgets })` so it exchanges counts on the breaker's KV session;
 * without a breaker (or while KV is degraded) every budget works per instance.
 *
 * @example
 * ```ts
 * const retryBudgets = createFleetRetryBudgets();
 * const users = retryBudgets.budget("users", { budgetPercent: 20, minRetriesPerSecond: 3 });
 * const breaker = createFleetBreaker({ kv, services, instanceId, retryBudgets });
 * await breaker.start();
 * users.recordRequest();
 * if (users.tryAcquireRetry()) {
 *   // send the retry
 * }
 * ```
 */
export function createFleetRetryBudgets(
  options: FleetRetryBudgetsOptions = {},
): FleetRetryBudgets {
  const windowMs = options.windowMs ?? 10_000;
  const budgets: Budgets = {
    windowMs,
    bucketMs: Math.max(1, Math.ceil(windowMs / BUCKETS)),
    exchangeIntervalMs: options.exchangeIntervalMs ?? 1000,
    services: new Map(),
    clock: options.now ?? Date.now,
    access: null,
    nextExchangeAtMs: -Infinity,
  };
  return {
    budget: (service, settings) => serviceBudget(budgets, service, settings),
    // A reload may build a new breaker: the budgets move to it with their counts, and the old
    // breaker's later re-syncs and its close (at retirement) no longer concern them.
    attach(access) {
      budgets.access = access;
      budgets.clock = access.now;
    },
    sync(from) {
      if (from !== undefined && from !== budgets.access) return Promise.resolve();
      return exchange(budgets);
    },
    detach(from) {
      if (from === undefined || from === budgets.access) budgets.access = null;
    },
  };
}

function serviceBudget(
  budgets: Budgets,
  name: string,
  settings: FleetRetryBudgetOptions,
): FleetRetryBudget {
  let service = budgets.services.get(name);
  if (service === undefined) {
    service = {
      name,
      budgetPercent: settings.budgetPercent,
      floorPerWindow: settings.minRetriesPerSecond * budgets.windowMs / 1000,
      own: createRing(),
      others: new Map(),
      readAtMs: -Infinity,
      ownAtRead: 0,
    };
    budgets.services.set(name, service);
  } else {
    // A reload that changed the service's settings: same counts (same KV keys), new numbers.
    service.budgetPercent = settings.budgetPercent;
    service.floorPerWindow = settings.minRetriesPerSecond * budgets.windowMs / 1000;
  }
  const state = service;
  return {
    recordRequest() {
      const index = slot(state.own, Math.floor(budgets.clock() / budgets.bucketMs));
      state.own.requests[index]++;
      state.own.dirty[index] = true;
    },
    tryAcquireRetry() {
      const bucket = Math.floor(budgets.clock() / budgets.bucketMs);
      if (!allows(budgets, state, bucket)) return false;
      const index = slot(state.own, bucket);
      state.own.retries[index]++;
      state.own.dirty[index] = true;
      return true;
    },
    snapshot: () => snapshot(budgets, state, Math.floor(budgets.clock() / budgets.bucketMs)),
  };
}

/**
 * The fleet's numbers are fresh enough to decide with: KV is in charge and they were read
 * within the window. Slower exchanges (a busy machine, a slow KV) keep the last shares, which
 * move only as the traffic mix does; numbers older than the window say nothing any more.
 */
function fleetUsable(budgets: Budgets, service: ServiceBudget, nowMs: number): boolean {
  return budgets.access !== null && budgets.access.active() &&
    service.readAtMs >= nowMs - budgets.windowMs;
}

function othersInWindow(
  service: ServiceBudget,
  bucket: number,
): { requests: number; retries: number } {
  let requests = 0;
  let retries = 0;
  for (const [id, counts] of service.others) {
    if (id > bucket - BUCKETS && id <= bucket) {
      requests += counts.requests;
      retries += counts.retries;
    }
  }
  return { requests, retries };
}

function snapshot(budgets: Budgets, service: ServiceBudget, bucket: number): FleetRetrySnapshot {
  return view(budgets, service, bucket).snapshot;
}

/** The snapshot, and whether this instance's share was raised to the minimum of one. */
function view(
  budgets: Budgets,
  service: ServiceBudget,
  bucket: number,
): { snapshot: FleetRetrySnapshot; raised: boolean } {
  const own = ownInWindow(service.own, bucket);
  const share = service.budgetPercent / 100;
  if (!fleetUsable(budgets, service, budgets.clock())) {
    const allowed = Math.floor(own.requests * share + service.floorPerWindow);
    return {
      snapshot: {
        ...own,
        allowedRetries: allowed,
        fleet: false,
        fleetRequests: own.requests,
        fleetRetries: own.retries,
        fleetAllowedRetries: allowed,
      },
      raised: false,
    };
  }
  const others = othersInWindow(service, bucket);
  const fleetRequests = others.requests + own.requests;
  const floorShare = service.floorPerWindow *
    floorFraction(budgets, service, bucket, others.requests, own.requests);
  const shareRetries = Math.floor(own.requests * share + floorShare);
  return {
    snapshot: {
      ...own,
      // At least one: a quiet service spread thin over many instances still retries now and
      // then (the fleet total then holds it to the fleet's budget as far as it is known).
      allowedRetries: Math.max(1, shareRetries),
      fleet: true,
      fleetRequests,
      fleetRetries: others.retries + own.retries,
      fleetAllowedRetries: Math.floor(fleetRequests * share + service.floorPerWindow),
    },
    raised: shareRetries < 1,
  };
}

/**
 * Buckets this close to the last read may still lack other instances' latest counts: each
 * publishes once an exchange, so a bucket is complete everywhere one exchange after it ended.
 */
const UNSETTLED_BUCKETS = 2;

/**
 * This instance's fraction of the fleet's floor: its share of the fleet's requests in the
 * buckets of the window that every instance had published whole when the fleet was last read
 * (older than {@link UNSETTLED_BUCKETS}). Every instance then divides the same numbers, and the
 * fractions add up to one even while a storm ramps up (with fresher counts of its own than of
 * the others, the instance that read last would take more than its part). Without such buckets
 * (traffic younger than that): our requests at the read against the others' as read.
 */
function floorFraction(
  budgets: Budgets,
  service: ServiceBudget,
  bucket: number,
  othersRequests: number,
  ownRequests: number,
): number {
  const readBucket = Math.floor(service.readAtMs / budgets.bucketMs);
  const newest = readBucket - UNSETTLED_BUCKETS;
  const oldest = Math.max(readBucket, bucket) - BUCKETS; // exclusive
  let mine = 0;
  for (let index = 0; index < RING; index++) {
    const id = service.own.ids[index];
    if (id > oldest && id <= newest) mine += service.own.requests[index];
  }
  let theirs = 0;
  for (const [id, counts] of service.others) {
    if (id > oldest && id <= newest) theirs += counts.requests;
  }
  if (mine > 0) return mine / (mine + theirs);
  const atRead = service.ownAtRead > 0 ? service.ownAtRead : ownRequests;
  return othersRequests + atRead === 0 ? 1 : atRead / (othersRequests + atRead);
}

function allows(budgets: Budgets, service: ServiceBudget, bucket: number): boolean {
  const { snapshot: counts, raised } = view(budgets, service, bucket);
  if (counts.retries + 1 > counts.allowedRetries) return false;
  return !raised || counts.fleetRetries + 1 <= counts.fleetAllowedRetries;
}

/** Writes the buckets that changed, then reads the fleet's window of every busy service. */
async function exchange(budgets: Budgets): Promise<void> {
  const access = budgets.access;
  if (access === null || !access.active()) return;
  const nowMs = access.now();
  if (nowMs < budgets.nextExchangeAtMs) return;
  budgets.nextExchangeAtMs = nowMs + budgets.exchangeIntervalMs;
  const bucket = Math.floor(nowMs / budgets.bucketMs);
  const busy = [...budgets.services.values()].filter((service) =>
    ownInWindow(service.own, bucket).requests > 0
  );
  await publish(budgets, access, busy);
  await Promise.all(
    busy.map((service) => readFleet(access, service, bucket, budgets.bucketMs)),
  );
}

async function publish(
  budgets: Budgets,
  access: FleetKvAccess,
  services: readonly ServiceBudget[],
): Promise<void> {
  const writes: { key: Deno.KvKey; value: [number, number] }[] = [];
  for (const service of services) {
    const { own } = service;
    for (let index = 0; index < RING; index++) {
      if (!own.dirty[index]) continue;
      own.dirty[index] = false;
      writes.push({
        key: retryCountKey(service.name, own.ids[index], access.instanceId),
        // Running totals: a repeated or lost write is harmless.
        value: [own.requests[index], own.retries[index]],
      });
    }
  }
  // Keys outlive the window; expiry is only garbage collection (buckets outside the window are
  // ignored by the reader).
  const expireIn = 2 * budgets.windowMs + 2 * budgets.bucketMs;
  for (let start = 0; start < writes.length; start += WRITES_PER_COMMIT) {
    const group = writes.slice(start, start + WRITES_PER_COMMIT);
    await access.call((kv) =>
      retryWhenLocked(async () => {
        let atomic = kv.atomic();
        for (const { key, value } of group) atomic = atomic.set(key, value, { expireIn });
        await atomic.commit();
      }, Math.random)
    );
  }
}

async function readFleet(
  access: FleetKvAccess,
  service: ServiceBudget,
  bucket: number,
  bucketMs: number,
): Promise<void> {
  const prefix = ["breakwater", "retry", service.name];
  const others = await access.call((kv) =>
    retryWhenLocked(async () => {
      const found = new Map<number, { requests: number; retries: number }>();
      const entries = kv.list<unknown>({
        start: [...prefix, bucket - BUCKETS + 1],
        end: [...prefix, bucket + 1],
      });
      for await (const entry of entries) {
        const [, , , id, instanceId] = entry.key;
        if (typeof id !== "number" || instanceId === access.instanceId) continue;
        const value = entry.value;
        if (!Array.isArray(value) || !value.every(Number.isFinite)) continue;
        const known = found.get(id) ?? { requests: 0, retries: 0 };
        known.requests += value[0];
        known.retries += value[1];
        found.set(id, known);
      }
      return found;
    }, Math.random)
  );
  service.others = others;
  service.readAtMs = access.now();
  service.ownAtRead = ownInWindow(service.own, Math.floor(service.readAtMs / bucketMs)).requests;
}
