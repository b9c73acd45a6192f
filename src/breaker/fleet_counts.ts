/**
 * The fleet's rule for opening: every instance's failure counts in time buckets in KV, summed
 * over the window, against `failureThreshold` and the `minInstances` quorum.
 *
 * Each instance keeps its own count per bucket of the current fleet generation in memory,
 * reports the buckets that changed (one report in flight per service, however fast failures
 * come), and reads the whole window back after each report. What it knows of the fleet total —
 * the others' counts as of its last read plus its own exact count — is what
 * {@link knownTotalReached} checks on every failure, so an instance stops sending without
 * waiting for KV.
 *
 * ## How far past `failureThreshold` a fleet can go (the overshoot)
 *
 * Let T = `failureThreshold`, instances i = 1..N, C_i = calls instance i has in flight to the
 * service (at most its `pool.maxConnections`), r_i = its rate of calls, R = one report round
 * trip to KV (write the instance's bucket counts and pulse, list the window). R is 2-5 ms for a
 * lone process on a local file or a nearby KV Connect server, and 20-150 ms when ten processes
 * report at once to one SQLite file (they queue for its write lock), which is exactly when an
 * outage starts. The upstream starts failing every call.
 *
 * 1. Calls already in flight fail whatever anyone decides: up to C_i per instance. A failure
 *    counts when its outcome arrives (a timeout arrives `timeoutMs` after the call was sent), so
 *    this term is inherent to every breaker.
 * 2. Counting lag. Each instance reports failures asynchronously, coalesced to one report in
 *    flight per service, and reads the whole window after each report. Every report also
 *    rewrites the service's pulse with the reporter's counts, which the other instances take
 *    at their next re-sync (or at once by watch, where watch is shared) and then read the
 *    window themselves. What an instance knows of the fleet total (the others' counts as last
 *    read, plus its own exact count) is a lower bound of the truth; it opens its own breaker
 *    the moment that known total reaches T — on recording a failure, on a pulse, or when a read
 *    shows it — without waiting for the compare-and-set, which follows in the background and
 *    puts the fleet record (one `probeAt` for everyone) in charge.
 * 3. The hold-back (`hold.ts`). While one more failure from each instance sending to the
 *    service could reach T, an instance that fails sends nothing more until the fleet has
 *    counted that failure (its report landed and a read after it came back, re-read while the
 *    count still rises). Without it, an instance keeps sending for about 2R after the true
 *    total reached T, and r_i x 2R grows with the rate and with the fleet (ten processes on one
 *    file: R up to 150 ms, 7 calls at 50 req/s). With it, that term is one call.
 * 4. The local cap. Each instance's local breaker also opens at T of its own failures in the
 *    window, whatever KV does, so no instance ever sends more than T + C_i failing calls.
 *
 * So the failed calls the upstream sees before every instance rejects are at most
 *
 *     T - 1 + sum over i of min(T + C_i, C_i + 1)          with the hold-back,
 *     T + sum over i of min(T, C_i + ceil(r_i * 2R))         without it,
 *
 * never more than N * (T + C) (what N independent breakers give). The one call per instance is
 * the call an instance sends before anything of the outage can have reached it; instances that
 * learn of the count before their next call (a pulse, a re-sync, their own read) add nothing.
 * Measured with ten processes at 50 req/s each, T = 5 (`bench/scenarios/fleet_scale.ts`; see
 * `hold.ts`): 11 on one KV file and 11 over KV Connect with the hold-back (one failed call per
 * instance), 30 and 37 without it. Three processes at ~40 calls/s (tests/breaker/
 * fleet_processes_test.ts): 7 (T + 2).
 *
 * The fleet window counts in buckets of `windowMs / 10` and counts a bucket while any part of
 * it is in the window, so the fleet may count a failure up to 10% longer than `windowMs`: it
 * trips early, never late. With `minInstances` > 1 the fleet trip also waits for that many
 * distinct reporters; an instance alone with failures is stopped by its local breaker (point 4).
 *
 * @module
 */
import type { BreakerStore } from "./kv_store.ts";
import { type BreakerPolicy, shouldTrip } from "./policy.ts";
import {
  type BucketCount,
  bucketIndex,
  bucketWidthMs,
  sumWindow,
  windowBuckets,
  type WindowTotals,
} from "./window.ts";

/** One service's failure counts as this instance knows them. */
export interface FleetCounts {
  /** Width of one counting bucket (`windowMs / 10`). */
  readonly bucketWidthMs: number;
  /** The fleet generation our own counts belong to. */
  generation: number;
  /** Our own failures per bucket of `generation` (running totals, as written to KV). */
  own: Map<number, number>;
  /** Buckets whose count changed since the last report. */
  dirty: Set<number>;
  /** A report is in flight. */
  reporting: boolean;
  /** A read of the window alone (no report) is in flight. */
  reading: boolean;
  /** Another read was asked for while one was in flight. */
  readAgain: boolean;
  /** Every instance's counts as read from KV (the highest seen per instance and bucket). */
  seen: BucketCount[];
  /** The generation `seen` was read in (-1: never read). */
  seenGeneration: number;
  /** Our failures counted so far (a sequence number; never reset). */
  failureSeq: number;
  /** The highest {@link failureSeq} a completed report round wrote and read back. */
  confirmedSeq: number;
  /** The {@link failureSeq} of the latest failure that holds calls back until counted. */
  holdSeq: number;
}

/** What one report round (or a read alone) read back: the window of `generation` at `atMs`. */
export interface WindowRead {
  /** The generation the counts were written and read in. */
  generation: number;
  /** When the window was read (epoch ms). */
  atMs: number;
  /** Every instance's counts in the window. */
  counts: BucketCount[];
  /** Our failures up to this sequence number are in `counts` (-1 for a read alone). */
  seq: number;
  /** How long our report's write took (0 for a read alone): how congested KV is right now. */
  writeMs: number;
}

/** Empty counts for a service under `policy`. */
export function createFleetCounts(policy: BreakerPolicy): FleetCounts {
  return {
    bucketWidthMs: bucketWidthMs(policy),
    generation: 0,
    own: new Map(),
    dirty: new Set(),
    reporting: false,
    reading: false,
    readAgain: false,
    seen: [],
    seenGeneration: -1,
    failureSeq: 0,
    confirmedSeq: 0,
    holdSeq: 0,
  };
}

/** A new fleet generation counts from zero: forgets our counts and what we read. */
export function resetFleetCounts(counts: FleetCounts, generation: number): void {
  counts.generation = generation;
  counts.own.clear();
  counts.dirty.clear();
  counts.seen = [];
  // Nothing of the old generation is waiting to be counted any more.
  counts.confirmedSeq = counts.failureSeq;
}

/** Our latest failure holds calls back until a report round has counted it (see `hold.ts`). */
export function holdUntilCounted(counts: FleetCounts): void {
  counts.holdSeq = counts.failureSeq;
}

/** True while a failure that holds calls back is not yet written and read back. */
export function unconfirmed(counts: FleetCounts): boolean {
  return counts.holdSeq > counts.confirmedSeq;
}

/** The fleet total this instance knows of: others as last read, plus our exact count. */
export function knownTotal(
  counts: FleetCounts,
  policy: BreakerPolicy,
  instanceId: string,
  atMs: number,
): number {
  let own = 0;
  const oldest = windowBuckets(policy, atMs).first;
  for (const [bucket, count] of counts.own) if (bucket >= oldest) own += count;
  return own + othersInWindow(counts, policy, instanceId, atMs);
}

/** Counts one of our failures at `atMs` in fleet generation `generation`, to be reported. */
export function addOwnFailure(
  counts: FleetCounts,
  policy: BreakerPolicy,
  generation: number,
  atMs: number,
): void {
  if (counts.generation !== generation) {
    counts.generation = generation;
    counts.own.clear();
    counts.dirty.clear();
  }
  const bucket = bucketIndex(atMs, counts.bucketWidthMs);
  const oldest = windowBuckets(policy, atMs).first;
  for (const known of counts.own.keys()) {
    if (known < oldest) counts.own.delete(known);
  }
  counts.own.set(bucket, (counts.own.get(bucket) ?? 0) + 1);
  counts.dirty.add(bucket);
  counts.failureSeq++;
}

/**
 * True when the fleet total this instance knows of reaches the threshold (and the quorum): the
 * other instances' counts as of our last window read plus our own exact count. Others' counts
 * only grow, so this is a lower bound of the true total — it never opens early — and it saves
 * the KV round trips of the fleet trip (our report, then the CAS) on the request path.
 */
export function knownTotalReached(
  counts: FleetCounts,
  policy: BreakerPolicy,
  instanceId: string,
  generation: number,
  atMs: number,
): boolean {
  if (counts.seenGeneration !== generation) return false;
  const known: BucketCount[] = counts.seen.filter((count) => count.instanceId !== instanceId);
  for (const [bucket, count] of counts.own) known.push({ bucket, instanceId, count });
  const totals = sumWindow(known, policy, atMs);
  return shouldTrip(policy, totals.failures, totals.reportingInstances);
}

/**
 * One report round: writes the buckets that changed since the last round (our running totals,
 * so a lost or repeated write is harmless), then reads every instance's counts in the window.
 * `call` runs one store call within the KV time limit.
 */
export async function reportRound(
  counts: FleetCounts,
  policy: BreakerPolicy,
  service: string,
  call: <T>(operation: (store: BreakerStore) => Promise<T>) => Promise<T>,
  now: () => number,
): Promise<WindowRead> {
  const generation = counts.generation;
  const seq = counts.failureSeq;
  // Every bucket of our window, not only those that changed: the pulse carries them all, and
  // one commit costs the same for one key or eleven.
  const writes = [...counts.own].map(([bucket, count]) => ({ bucket, count }));
  counts.dirty.clear();
  // Keys outlive the window; expiry is only garbage collection (see kv_store.ts).
  const expireInMs = 2 * policy.windowMs + 2 * counts.bucketWidthMs;
  const startedMs = now();
  await call((store) => store.reportFailures(service, generation, writes, expireInMs, startedMs));
  const landedMs = now();
  const read = await readRound(counts, policy, service, call, now);
  return { ...read, seq, writeMs: landedMs - startedMs };
}

/**
 * Reads every instance's counts in the window of our generation, without writing (an
 * instance that learnt the fleet is failing, and has nothing of its own to report).
 */
export async function readRound(
  counts: FleetCounts,
  policy: BreakerPolicy,
  service: string,
  call: <T>(operation: (store: BreakerStore) => Promise<T>) => Promise<T>,
  now: () => number,
): Promise<WindowRead> {
  const generation = counts.generation;
  const atMs = now();
  const { first, last } = windowBuckets(policy, atMs);
  const read = await call((store) => store.readWindow(service, generation, first, last));
  return { generation, atMs, counts: read, seq: -1, writeMs: 0 };
}

/**
 * Keeps what a read found, and returns the window's totals. Counts are running totals per
 * instance and bucket, so reads that finish out of order are merged by keeping the highest.
 */
export function noteWindowRead(
  counts: FleetCounts,
  policy: BreakerPolicy,
  read: WindowRead,
): WindowTotals {
  if (read.generation !== counts.generation) return sumWindow(read.counts, policy, read.atMs);
  if (counts.seenGeneration !== read.generation) counts.seen = [];
  const oldest = windowBuckets(policy, read.atMs).first;
  const merged = new Map<string, BucketCount>();
  for (const entry of [...counts.seen, ...read.counts]) {
    if (entry.bucket < oldest) continue;
    const key = `${entry.bucket}\u0000${entry.instanceId}`;
    const known = merged.get(key);
    if (known === undefined || known.count < entry.count) merged.set(key, entry);
  }
  counts.seen = [...merged.values()];
  counts.seenGeneration = read.generation;
  return sumWindow(counts.seen, policy, read.atMs);
}

/** Our failures up to `seq` are counted by the fleet: they no longer hold calls back. */
export function confirmFailures(counts: FleetCounts, seq: number): void {
  if (seq > counts.confirmedSeq) counts.confirmedSeq = seq;
}

/** Failures of other instances in the window as this instance knows them. */
export function othersInWindow(
  counts: FleetCounts,
  policy: BreakerPolicy,
  instanceId: string,
  atMs: number,
): number {
  if (counts.seenGeneration !== counts.generation) return 0;
  return sumWindow(
    counts.seen.filter((entry) => entry.instanceId !== instanceId),
    policy,
    atMs,
  ).failures;
}

/** The fleet's failures in the window as last read, or null when not read in `generation`. */
export function fleetFailuresInWindow(
  counts: FleetCounts,
  policy: BreakerPolicy,
  generation: number,
  atMs: number,
): number | null {
  if (counts.seenGeneration !== generation) return null;
  return sumWindow(counts.seen, policy, atMs).failures;
}

/** KV went away: counts not yet reported stay unreported (the fleet will not hear of them). */
export function dropUnreported(counts: FleetCounts): void {
  counts.dirty.clear();
  counts.confirmedSeq = counts.failureSeq;
}
