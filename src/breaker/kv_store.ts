/**
 * The fleet's breakers in Deno KV, behind the small {@link BreakerStore} interface (so a test can
 * wrap it and count calls; the tests still run it against real KV).
 *
 * Keys:
 *
 * | key | value | written by |
 * | --- | --- | --- |
 * | `["breakwater", "breaker", service]` | {@link BreakerRecord} + `updatedBy` | CAS on the versionstamp |
 * | `["breakwater", "failures", service, generation, bucket, instanceId]` | this instance's failures in the bucket (number) | `set` with `expireIn` |
 * | `["breakwater", "probe", service, generation, slot]` | {@link LeaseValue} | CAS, with `expireIn` |
 *
 * Why per-instance bucket keys written with `set` rather than one shared key per bucket
 * updated with `atomic().sum()`: `sum` takes no `expireIn` (Deno 2.9.6), so summed buckets would
 * never expire and need a collector; each instance owning its key makes `set` exact (one writer,
 * its writes serialised by the breaker), lets the key expire, and one range `list` of the
 * window yields both the fleet total and the distinct reporting instances the `minInstances`
 * quorum needs — no separate marker keys.
 *
 * Every call retries `database is locked` (another process holds the SQLite write lock) after a
 * jittered pause, re-reading before it re-checks. Expiry in Deno KV is lazy (an expired key can
 * stay visible for a while), so leases carry their own `expiresAtMs` and the bucket index in the
 * failure keys decides what is in the window; `expireIn` is only garbage collection.
 *
 * @module
 */
import { retryWhenLocked } from "./_kv_retry.ts";
import { type BreakerRecord, INITIAL_RECORD, parseRecord } from "./policy.ts";
import type { BucketCount } from "./window.ts";

/** The key prefix of everything the breaker stores. */
export const KEY_ROOT = "breakwater";

/** The key of a service's breaker record. */
export function recordKey(service: string): Deno.KvKey {
  return [KEY_ROOT, "breaker", service];
}

/** The key of one instance's failure count in one bucket. */
export function failureKey(
  service: string,
  generation: number,
  bucket: number,
  instanceId: string,
): Deno.KvKey {
  return [KEY_ROOT, "failures", service, generation, bucket, instanceId];
}

/** The key of one probe slot of one half-open round. */
export function leaseKey(service: string, generation: number, slot: number): Deno.KvKey {
  return [KEY_ROOT, "probe", service, generation, slot];
}

/** A breaker record as read from KV; `versionstamp` null means no record yet (closed, gen 0). */
export interface StoredEntry {
  /** The record (the initial record when none is stored or it is unreadable). */
  record: BreakerRecord;
  /** The versionstamp it was read at; null when the key does not exist. */
  versionstamp: string | null;
}

/** What {@link BreakerStore.transition} did. */
export interface TransitionResult extends StoredEntry {
  /**
   * `committed`: our update is stored (record/versionstamp are ours); `unchanged`: the update
   * did not apply to the current record, or the generation had moved on (record is the current
   * one); `conflict`: lost the CAS race too often in a row.
   */
  outcome: "committed" | "unchanged" | "conflict";
}

/** The value of a probe lease key. */
export interface LeaseValue {
  /** Who holds the slot. */
  instanceId: string;
  /** After this (epoch ms) the slot is free again, whatever KV's lazy expiry shows. */
  expiresAtMs: number;
}

/** A probe slot this instance holds. */
export interface Lease {
  /** The half-open round (breaker generation) it belongs to. */
  generation: number;
  /** Which of the `halfOpenProbes` slots. */
  slot: number;
  /** The versionstamp of our write, to release it only if it is still ours. */
  versionstamp: string;
  /** When it stops being ours. */
  expiresAtMs: number;
}

/** A running watch on breaker records. */
export interface RecordWatch {
  /** Stops the watch and waits until its loop ended. */
  close(): Promise<void>;
}

/** Everything the fleet breaker asks of its store. */
export interface BreakerStore {
  /** The current records of these services (in order). */
  readRecords(services: readonly string[]): Promise<StoredEntry[]>;
  /**
   * Compare-and-set: reads the record, applies `update` and commits only if the record did not
   * change in between; re-reads and re-applies on a lost race. `update` returns its input
   * unchanged (same object) when nothing is to be written. With `expectGeneration` the update
   * applies only while the record is still in that generation.
   */
  transition(
    service: string,
    update: (current: BreakerRecord) => BreakerRecord,
    expectGeneration?: number,
  ): Promise<TransitionResult>;
  /** Stores this instance's failure count for one bucket (its running total, not a delta). */
  reportFailures(
    service: string,
    generation: number,
    bucket: number,
    count: number,
    expireInMs: number,
  ): Promise<void>;
  /** Every instance's failure counts in buckets `firstBucket..lastBucket` of a generation. */
  readWindow(
    service: string,
    generation: number,
    firstBucket: number,
    lastBucket: number,
  ): Promise<BucketCount[]>;
  /** Takes a free probe slot of a half-open round, or returns null when all are held. */
  acquireLease(
    service: string,
    generation: number,
    slots: number,
    nowMs: number,
    leaseMs: number,
  ): Promise<Lease | null>;
  /** Frees a slot if it is still ours (a probe whose client went away). */
  releaseLease(service: string, lease: Lease): Promise<boolean>;
  /** Calls `onChange` whenever a watched record changes; `onError` once if the watch fails. */
  watchRecords(
    services: readonly string[],
    onChange: (service: string, entry: StoredEntry) => void,
    onError: (error: unknown) => void,
  ): RecordWatch;
}

/** Options of {@link createKvBreakerStore}. */
export interface KvBreakerStoreOptions {
  /** Written into records and leases so an operator can see who did what. */
  instanceId: string;
  /** Jitter for lock retries. Default `Math.random`. */
  random?: () => number;
}

/** Deno KV's getMany and watch take at most 10 keys per call. */
const KV_KEYS_PER_CALL = 10;
/** Lost CAS races in a row before a transition gives up (each loser re-reads first). */
const CAS_ATTEMPTS = 16;

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let start = 0; start < items.length; start += size) {
    out.push(items.slice(start, start + size));
  }
  return out;
}

function toStoredEntry(entry: Deno.KvEntryMaybe<unknown>): StoredEntry {
  if (entry.versionstamp === null) return { record: INITIAL_RECORD, versionstamp: null };
  // An unreadable record is treated as closed at its place in history: the next transition
  // overwrites it (CAS on the versionstamp we read), so one bad write cannot wedge a service.
  return { record: parseRecord(entry.value) ?? INITIAL_RECORD, versionstamp: entry.versionstamp };
}

function isLeaseValue(value: unknown): value is LeaseValue {
  return typeof value === "object" && value !== null &&
    Number.isFinite((value as LeaseValue).expiresAtMs);
}

/** What every store call needs: the handle, who we are, and the lock-retry wrapper. */
interface StoreContext {
  readonly kv: Deno.Kv;
  readonly instanceId: string;
  readonly locked: <T>(operation: () => Promise<T>) => Promise<T>;
}

/**
 * A {@link BreakerStore} on a Deno KV handle (`:memory:`, a file, or a KV Connect URL).
 * The handle stays the caller's: the store never closes it.
 *
 * @example
 * ```ts
 * const kv = await Deno.openKv(":memory:");
 * const store = createKvBreakerStore(kv, { instanceId: "gw-1" });
 * const [users] = await store.readRecords(["users"]); // closed, generation 0
 * ```
 */
export function createKvBreakerStore(kv: Deno.Kv, options: KvBreakerStoreOptions): BreakerStore {
  const random = options.random ?? Math.random;
  const context: StoreContext = {
    kv,
    instanceId: options.instanceId,
    locked: (operation) => retryWhenLocked(operation, random),
  };
  return {
    readRecords: (services) => readRecords(context, services),
    transition: (service, update, expectGeneration) =>
      transitionRecord(context, service, update, expectGeneration),
    reportFailures: (service, generation, bucket, count, expireInMs) =>
      reportFailures(context, service, generation, bucket, count, expireInMs),
    readWindow: (service, generation, firstBucket, lastBucket) =>
      readWindow(context, service, generation, firstBucket, lastBucket),
    acquireLease: (service, generation, slots, nowMs, leaseMs) =>
      acquireLease(context, service, generation, slots, nowMs, leaseMs),
    releaseLease: (service, lease) => releaseLease(context, service, lease),
    watchRecords: (services, onChange, onError) =>
      watchRecords(context, services, onChange, onError),
  };
}

async function readRecords(
  { kv, locked }: StoreContext,
  services: readonly string[],
): Promise<StoredEntry[]> {
  const out: StoredEntry[] = [];
  for (const group of chunks(services, KV_KEYS_PER_CALL)) {
    const entries = await locked(() => kv.getMany(group.map(recordKey)));
    for (const entry of entries) out.push(toStoredEntry(entry));
  }
  return out;
}

async function transitionRecord(
  { kv, locked, instanceId }: StoreContext,
  service: string,
  update: (current: BreakerRecord) => BreakerRecord,
  expectGeneration?: number,
): Promise<TransitionResult> {
  const key = recordKey(service);
  let current: StoredEntry = { record: INITIAL_RECORD, versionstamp: null };
  for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
    const result = await locked(async (): Promise<TransitionResult | null> => {
      current = toStoredEntry(await kv.get(key));
      if (expectGeneration !== undefined && current.record.generation !== expectGeneration) {
        return { outcome: "unchanged", ...current };
      }
      const next = update(current.record);
      if (next === current.record) return { outcome: "unchanged", ...current };
      const commit = await kv.atomic()
        .check({ key, versionstamp: current.versionstamp })
        .set(key, { ...next, updatedBy: instanceId })
        .commit();
      return commit.ok
        ? { outcome: "committed", record: next, versionstamp: commit.versionstamp }
        : null;
    });
    if (result !== null) return result;
  }
  return { outcome: "conflict", ...current };
}

async function reportFailures(
  { kv, locked, instanceId }: StoreContext,
  service: string,
  generation: number,
  bucket: number,
  count: number,
  expireInMs: number,
): Promise<void> {
  const key = failureKey(service, generation, bucket, instanceId);
  await locked(() => kv.set(key, count, { expireIn: expireInMs }));
}

function readWindow(
  { kv, locked }: StoreContext,
  service: string,
  generation: number,
  firstBucket: number,
  lastBucket: number,
): Promise<BucketCount[]> {
  const prefix = [KEY_ROOT, "failures", service, generation];
  return locked(async () => {
    const counts: BucketCount[] = [];
    const entries = kv.list<number>({
      start: [...prefix, firstBucket],
      end: [...prefix, lastBucket + 1],
    });
    for await (const entry of entries) {
      const bucket = entry.key[4];
      const instanceId = entry.key[5];
      if (typeof bucket !== "number" || typeof instanceId !== "string") continue;
      if (!Number.isFinite(entry.value)) continue;
      counts.push({ bucket, instanceId, count: entry.value });
    }
    return counts;
  });
}

async function acquireLease(
  { kv, locked, instanceId }: StoreContext,
  service: string,
  generation: number,
  slots: number,
  nowMs: number,
  leaseMs: number,
): Promise<Lease | null> {
  const slotNumbers = Array.from({ length: slots }, (_, slot) => slot);
  for (const group of chunks(slotNumbers, KV_KEYS_PER_CALL)) {
    const keys = group.map((slot) => leaseKey(service, generation, slot));
    const entries = await locked(() => kv.getMany(keys));
    for (const [index, entry] of entries.entries()) {
      if (isLeaseValue(entry.value) && entry.value.expiresAtMs > nowMs) continue;
      const expiresAtMs = nowMs + leaseMs;
      const value: LeaseValue = { instanceId, expiresAtMs };
      // The check makes the slot a CAS: of all instances that saw it free, one wins. A locked
      // database retries the same check, which fails if someone else got in meanwhile.
      const commit = await locked(() =>
        kv.atomic()
          .check(entry)
          .set(keys[index], value, { expireIn: leaseMs })
          .commit()
      );
      if (commit.ok) {
        return { generation, slot: group[index], versionstamp: commit.versionstamp, expiresAtMs };
      }
    }
  }
  return null;
}

async function releaseLease(
  { kv, locked }: StoreContext,
  service: string,
  lease: Lease,
): Promise<boolean> {
  const key = leaseKey(service, lease.generation, lease.slot);
  const commit = await locked(() =>
    kv.atomic().check({ key, versionstamp: lease.versionstamp }).delete(key).commit()
  );
  return commit.ok;
}

type RecordReader = ReadableStreamDefaultReader<Deno.KvEntryMaybe<unknown>[]>;

/** Reads one watch stream until it ends; an end nobody asked for is the store going away. */
async function readWatch(
  reader: RecordReader,
  group: readonly string[],
  onChange: (service: string, entry: StoredEntry) => void,
  isClosing: () => boolean,
  fail: (error: unknown) => void,
): Promise<void> {
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      for (const [index, entry] of value.entries()) onChange(group[index], toStoredEntry(entry));
    }
    // A watch that ends without being asked to has lost its store.
    if (!isClosing()) fail(new Error("KV watch ended"));
  } catch (error) {
    fail(error);
  }
}

function watchRecords(
  { kv }: StoreContext,
  services: readonly string[],
  onChange: (service: string, entry: StoredEntry) => void,
  onError: (error: unknown) => void,
): RecordWatch {
  let closing = false;
  let failed = false;
  const readers: RecordReader[] = [];
  const loops: Promise<void>[] = [];
  const fail = (error: unknown) => {
    if (closing || failed) return;
    failed = true;
    onError(error);
  };
  for (const group of chunks(services, KV_KEYS_PER_CALL)) {
    let reader: RecordReader;
    try {
      reader = kv.watch(group.map(recordKey)).getReader();
    } catch (error) {
      fail(error);
      break;
    }
    readers.push(reader);
    loops.push(readWatch(reader, group, onChange, () => closing, fail));
  }
  return {
    async close() {
      if (closing) return;
      closing = true;
      await Promise.allSettled(readers.map((reader) => reader.cancel()));
      await Promise.allSettled(loops);
    },
  };
}
