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
  /** Every instance's counts as last read from KV. */
  seen: BucketCount[];
  /** The generation `seen` was read in (-1: never read). */
  seenGeneration: number;
}

/** What one report round read back: the window of `generation` at `atMs`. */
export interface WindowRead {
  /** The generation the counts were written and read in. */
  generation: number;
  /** When the window was read (epoch ms). */
  atMs: number;
  /** Every instance's counts in the window. */
  counts: BucketCount[];
}

/** Empty counts for a service under `policy`. */
export function createFleetCounts(policy: BreakerPolicy): FleetCounts {
  return {
    bucketWidthMs: bucketWidthMs(policy),
    generation: 0,
    own: new Map(),
    dirty: new Set(),
    reporting: false,
    seen: [],
    seenGeneration: -1,
  };
}

/** A new fleet generation counts from zero: forgets our counts and what we read. */
export function resetFleetCounts(counts: FleetCounts, generation: number): void {
  counts.generation = generation;
  counts.own.clear();
  counts.dirty.clear();
  counts.seen = [];
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
  const writes = [...counts.dirty].map((bucket) => ({
    bucket,
    count: counts.own.get(bucket) ?? 0,
  }));
  counts.dirty.clear();
  // Keys outlive the window; expiry is only garbage collection (see kv_store.ts).
  const expireInMs = 2 * policy.windowMs + 2 * counts.bucketWidthMs;
  for (const { bucket, count } of writes) {
    await call((store) => store.reportFailures(service, generation, bucket, count, expireInMs));
  }
  const atMs = now();
  const { first, last } = windowBuckets(policy, atMs);
  const read = await call((store) => store.readWindow(service, generation, first, last));
  return { generation, atMs, counts: read };
}

/** Keeps what a report round read, and returns the window's totals. */
export function noteWindowRead(
  counts: FleetCounts,
  policy: BreakerPolicy,
  read: WindowRead,
): WindowTotals {
  counts.seen = read.counts;
  counts.seenGeneration = read.generation;
  return sumWindow(read.counts, policy, read.atMs);
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
}
