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
 * | `["breakwater", "pulse", service]` | {@link PulseValue}: the latest failure report | with every failure report |
 * | `["breakwater", "audit", ...]` | {@link AuditEntry} (see `audit.ts`) | with the change it describes, `expireIn` |
 * | `["breakwater", "activity", instanceId]` | {@link ActivityValue}: services it sends to | every second while busy, `expireIn` |
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
import {
  type AuditEntry,
  auditKey,
  type AuditKind,
  auditPrefix,
  DEFAULT_AUDIT_RETENTION_MS,
  parseAuditEntry,
  serviceAuditKey,
  transitionKind,
} from "./audit.ts";
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

/**
 * The key of a service's pulse: rewritten by every failure report, read with the records and
 * watched with them, so an instance learns that the fleet has started failing without listing
 * every failure key.
 */
export function pulseKey(service: string): Deno.KvKey {
  return [KEY_ROOT, "pulse", service];
}

/** The value of a pulse key. */
export interface PulseValue {
  /** The fleet generation the reported failures belong to. */
  generation: number;
  /** Who reported. */
  instanceId: string;
  /** When (epoch ms, the reporter's clock). */
  atMs: number;
  /**
   * The reporter's running counts in its window, `[bucket, count]`: what its failure keys now
   * say, so a watcher knows them without listing the keys.
   */
  counts: [number, number][];
}

/** A pulse as read from KV. */
export interface Pulse extends PulseValue {
  /** Changes with every report: a new versionstamp is a new report. */
  versionstamp: string;
}

/** A breaker record as read from KV; `versionstamp` null means no record yet (closed, gen 0). */
export interface StoredEntry {
  /** The record (the initial record when none is stored or it is unreadable). */
  record: BreakerRecord;
  /** The versionstamp it was read at; null when the key does not exist. */
  versionstamp: string | null;
  /** The service's pulse, when read with the record (re-sync, watch); null when none. */
  pulse?: Pulse | null;
}

/** The key of one instance's activity (the services it is sending requests to). */
export function activityKey(instanceId: string): Deno.KvKey {
  return [KEY_ROOT, "activity", instanceId];
}

/** The value of an activity key. */
export interface ActivityValue {
  /** When it was written (epoch ms, the writer's clock). */
  atMs: number;
  /** The services the instance sent requests to since its previous write. */
  services: string[];
}

/** One other instance's activity as read. */
export interface Activity extends ActivityValue {
  /** Whose. */
  instanceId: string;
}

/** One bucket's running failure count, as {@link BreakerStore.reportFailures} writes it. */
export interface BucketWrite {
  /** The bucket index. */
  bucket: number;
  /** This instance's running total in it. */
  count: number;
}

/** What a change written with an audit entry needs to describe itself. */
export interface AuditNote {
  /** When (epoch ms). */
  atMs: number;
  /** Who asked (operator actions), or null. */
  by: string | null;
  /** The kind, when the caller names it (a force); else derived from the records. */
  kind?: AuditKind;
  /** For a trip: the fleet's failures in the window that reached the threshold. */
  failures?: number;
}

/** What {@link BreakerStore.transition} did. */
export interface TransitionResult extends StoredEntry {
  /**
   * `committed`: our update is stored (record/versionstamp are ours); `unchanged`: the update
   * did not apply to the current record, or the generation had moved on (record is the current
   * one); `conflict`: lost the CAS race too often in a row.
   */
  outcome: "committed" | "unchanged" | "conflict";
  /** The audit entry committed with the change, if one was asked for. */
  audit?: AuditEntry;
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
  /** The audit entry committed with the slot, if one was asked for. */
  audit?: AuditEntry;
}

/** A running watch on breaker records. */
export interface RecordWatch {
  /** Stops the watch and waits until its loop ended. */
  close(): Promise<void>;
}

/** Everything the fleet breaker asks of its store. */
export interface BreakerStore {
  /** The current records of these services (in order), each with its pulse. */
  readRecords(services: readonly string[]): Promise<StoredEntry[]>;
  /**
   * Compare-and-set: reads the record, applies `update` and commits only if the record did not
   * change in between; re-reads and re-applies on a lost race. `update` returns its input
   * unchanged (same object) when nothing is to be written. With `expectGeneration` the update
   * applies only while the record is still in that generation. With `audit`, the change is
   * written to the audit timeline in the same commit (a transition the timeline does not show,
   * such as a force naming the current state, still gets an entry when `audit.kind` is set).
   */
  transition(
    service: string,
    update: (current: BreakerRecord) => BreakerRecord,
    expectGeneration?: number,
    audit?: AuditNote,
  ): Promise<TransitionResult>;
  /**
   * Stores this instance's failure counts in the buckets of its window (running totals, not
   * deltas) and the service's pulse carrying them, in one commit.
   */
  reportFailures(
    service: string,
    generation: number,
    counts: readonly BucketWrite[],
    expireInMs: number,
    atMs: number,
  ): Promise<void>;
  /** Every instance's failure counts in buckets `firstBucket..lastBucket` of a generation. */
  readWindow(
    service: string,
    generation: number,
    firstBucket: number,
    lastBucket: number,
  ): Promise<BucketCount[]>;
  /**
   * Takes a free probe slot of a half-open round, or returns null when all are held. With
   * `audit`, a `probe` entry is committed with the slot.
   */
  acquireLease(
    service: string,
    generation: number,
    slots: number,
    nowMs: number,
    leaseMs: number,
    audit?: boolean,
  ): Promise<Lease | null>;
  /** Frees a slot if it is still ours (a probe whose client went away). */
  releaseLease(service: string, lease: Lease): Promise<boolean>;
  /** Stores which services this instance is sending to (replacing its previous activity). */
  publishActivity(services: readonly string[], atMs: number, expireInMs: number): Promise<void>;
  /** Every instance's activity (at most `limit`), this instance's included. */
  readActivity(limit: number): Promise<Activity[]>;
  /**
   * The newest audit entries (of `service`, or of every service), newest first, at most
   * `limit`, none older than `sinceMs`.
   */
  readAudit(service: string | undefined, limit: number, sinceMs: number): Promise<AuditEntry[]>;
  /**
   * Calls `onChange` whenever a watched record or its pulse changes; `onError` once if the watch
   * fails.
   */
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
  /** How long audit entries are kept (`expireIn`). Default 7 days. */
  auditRetentionMs?: number;
}

/** Deno KV's getMany and watch take at most 10 keys per call. */
const KV_KEYS_PER_CALL = 10;
/** Services per getMany/watch call: each brings its record and its pulse. */
const SERVICES_PER_CALL = KV_KEYS_PER_CALL / 2;
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

function isCountPair(pair: unknown): pair is [number, number] {
  return Array.isArray(pair) && pair.length === 2 && Number.isSafeInteger(pair[0]) &&
    Number.isFinite(pair[1]);
}

function toPulse(entry: Deno.KvEntryMaybe<unknown>): Pulse | null {
  const value = entry.value as Partial<PulseValue> | null;
  if (
    entry.versionstamp === null || typeof value !== "object" || value === null ||
    !Number.isSafeInteger(value.generation) || typeof value.instanceId !== "string" ||
    !Number.isFinite(value.atMs) || !Array.isArray(value.counts) ||
    !value.counts.every(isCountPair)
  ) return null;
  return {
    generation: value.generation!,
    instanceId: value.instanceId,
    atMs: value.atMs!,
    counts: value.counts,
    versionstamp: entry.versionstamp,
  };
}

/** The keys of a group of services: records first, then pulses. */
function stateKeys(group: readonly string[]): Deno.KvKey[] {
  return [...group.map(recordKey), ...group.map(pulseKey)];
}

/** Entries read for {@link stateKeys}, back to one entry per service. */
function toStoredEntries(
  group: readonly string[],
  entries: readonly Deno.KvEntryMaybe<unknown>[],
): StoredEntry[] {
  return group.map((_, index) => ({
    ...toStoredEntry(entries[index]),
    pulse: toPulse(entries[group.length + index]),
  }));
}

function isLeaseValue(value: unknown): value is LeaseValue {
  return typeof value === "object" && value !== null &&
    Number.isFinite((value as LeaseValue).expiresAtMs);
}

/** What every store call needs: the handle, who we are, and the lock-retry wrapper. */
interface StoreContext {
  readonly kv: Deno.Kv;
  readonly instanceId: string;
  readonly auditRetentionMs: number;
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
    auditRetentionMs: options.auditRetentionMs ?? DEFAULT_AUDIT_RETENTION_MS,
    locked: (operation) => retryWhenLocked(operation, random),
  };
  return {
    readRecords: (services) => readRecords(context, services),
    transition: (service, update, expectGeneration, audit) =>
      transitionRecord(context, service, update, expectGeneration, audit),
    reportFailures: (service, generation, counts, expireInMs, atMs) =>
      reportFailures(context, service, generation, counts, expireInMs, atMs),
    readWindow: (service, generation, firstBucket, lastBucket) =>
      readWindow(context, service, generation, firstBucket, lastBucket),
    acquireLease: (service, generation, slots, nowMs, leaseMs, audit) =>
      acquireLease(context, service, generation, slots, nowMs, leaseMs, audit),
    releaseLease: (service, lease) => releaseLease(context, service, lease),
    readAudit: (service, limit, sinceMs) => readAudit(context, service, limit, sinceMs),
    publishActivity: (services, atMs, expireInMs) =>
      publishActivity(context, services, atMs, expireInMs),
    readActivity: (limit) => readActivity(context, limit),
    watchRecords: (services, onChange, onError) =>
      watchRecords(context, services, onChange, onError),
  };
}

async function readRecords(
  { kv, locked }: StoreContext,
  services: readonly string[],
): Promise<StoredEntry[]> {
  const out: StoredEntry[] = [];
  for (const group of chunks(services, SERVICES_PER_CALL)) {
    const entries = await locked(() => kv.getMany(stateKeys(group)));
    out.push(...toStoredEntries(group, entries));
  }
  return out;
}

let auditSequence = 0;

/**
 * A unique id for an audit entry: two entries in one ms must not collide, and one instance's
 * entries of the same ms must list in the order they were made (the sequence), whatever the
 * clock's resolution.
 */
function auditId(instanceId: string): string {
  auditSequence++;
  const sequence = auditSequence.toString(36).padStart(8, "0");
  return `${instanceId}:${sequence}:${crypto.randomUUID().slice(0, 4)}`;
}

/** Adds the two keys of `entry` to a commit. */
function withAudit(
  atomic: Deno.AtomicOperation,
  entry: AuditEntry,
  retentionMs: number,
): Deno.AtomicOperation {
  const id = auditId(entry.instanceId);
  const { fleet: _fleet, ...value } = entry;
  return atomic
    .set(auditKey(entry, id), value, { expireIn: retentionMs })
    .set(serviceAuditKey(entry, id), value, { expireIn: retentionMs });
}

/** The audit entry of a change from `from` to `to`, or null when the timeline does not show it. */
function describeChange(
  service: string,
  instanceId: string,
  from: BreakerRecord,
  to: BreakerRecord,
  note: AuditNote,
): AuditEntry | null {
  const kind = note.kind ?? transitionKind(from, to);
  if (kind === null) return null;
  const entry: AuditEntry = {
    atMs: note.atMs,
    service,
    kind,
    instanceId,
    by: note.by,
    from: from.state,
    to: to.state,
    generation: to.generation,
    fleet: true,
  };
  if (kind === "trip" && note.failures !== undefined) entry.failures = note.failures;
  return entry;
}

async function transitionRecord(
  { kv, locked, instanceId, auditRetentionMs }: StoreContext,
  service: string,
  update: (current: BreakerRecord) => BreakerRecord,
  expectGeneration?: number,
  audit?: AuditNote,
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
      let atomic = kv.atomic()
        .check({ key, versionstamp: current.versionstamp })
        .set(key, { ...next, updatedBy: instanceId });
      const entry = audit === undefined
        ? null
        : describeChange(service, instanceId, current.record, next, audit);
      if (entry !== null) atomic = withAudit(atomic, entry, auditRetentionMs);
      const commit = await atomic.commit();
      if (!commit.ok) return null;
      const result: TransitionResult = {
        outcome: "committed",
        record: next,
        versionstamp: commit.versionstamp,
      };
      if (entry !== null) result.audit = entry;
      return result;
    });
    if (result !== null) return result;
  }
  return { outcome: "conflict", ...current };
}

async function reportFailures(
  { kv, locked, instanceId }: StoreContext,
  service: string,
  generation: number,
  counts: readonly BucketWrite[],
  expireInMs: number,
  atMs: number,
): Promise<void> {
  const pulse: PulseValue = {
    generation,
    instanceId,
    atMs,
    counts: counts.map(({ bucket, count }) => [bucket, count]),
  };
  await locked(async () => {
    // One commit: the counts, and the pulse that carries them to every watcher.
    let atomic = kv.atomic().set(pulseKey(service), pulse);
    for (const { bucket, count } of counts) {
      atomic = atomic.set(failureKey(service, generation, bucket, instanceId), count, {
        expireIn: expireInMs,
      });
    }
    await atomic.commit();
  });
}

async function publishActivity(
  { kv, locked, instanceId }: StoreContext,
  services: readonly string[],
  atMs: number,
  expireInMs: number,
): Promise<void> {
  const value: ActivityValue = { atMs, services: [...services] };
  await locked(() => kv.set(activityKey(instanceId), value, { expireIn: expireInMs }));
}

async function readActivity({ kv, locked }: StoreContext, limit: number): Promise<Activity[]> {
  return await locked(async () => {
    const out: Activity[] = [];
    for await (const entry of kv.list({ prefix: [KEY_ROOT, "activity"] }, { limit })) {
      const instanceId = entry.key[2];
      const value = entry.value as Partial<ActivityValue> | null;
      if (
        typeof instanceId !== "string" || typeof value !== "object" || value === null ||
        !Number.isFinite(value.atMs) || !Array.isArray(value.services)
      ) continue;
      const services = value.services.filter((name): name is string => typeof name === "string");
      out.push({ instanceId, atMs: value.atMs!, services });
    }
    return out;
  });
}

async function readAudit(
  { kv, locked }: StoreContext,
  service: string | undefined,
  limit: number,
  sinceMs: number,
): Promise<AuditEntry[]> {
  return await locked(async () => {
    const out: AuditEntry[] = [];
    const entries = kv.list({ prefix: auditPrefix(service) }, { reverse: true, limit });
    for await (const entry of entries) {
      const parsed = parseAuditEntry(entry.value);
      // Expiry is lazy: an entry past its retention may still be listed.
      if (parsed !== null && parsed.atMs >= sinceMs) out.push(parsed);
    }
    return out;
  });
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
  { kv, locked, instanceId, auditRetentionMs }: StoreContext,
  service: string,
  generation: number,
  slots: number,
  nowMs: number,
  leaseMs: number,
  audit = false,
): Promise<Lease | null> {
  const entry: AuditEntry | null = audit
    ? {
      atMs: nowMs,
      service,
      kind: "probe",
      instanceId,
      by: null,
      from: "open",
      to: "half_open",
      generation,
      fleet: true,
    }
    : null;
  const slotNumbers = Array.from({ length: slots }, (_, slot) => slot);
  for (const group of chunks(slotNumbers, KV_KEYS_PER_CALL)) {
    const keys = group.map((slot) => leaseKey(service, generation, slot));
    const entries = await locked(() => kv.getMany(keys));
    for (const [index, slotEntry] of entries.entries()) {
      if (isLeaseValue(slotEntry.value) && slotEntry.value.expiresAtMs > nowMs) continue;
      const expiresAtMs = nowMs + leaseMs;
      const value: LeaseValue = { instanceId, expiresAtMs };
      // The check makes the slot a CAS: of all instances that saw it free, one wins. A locked
      // database retries the same check, which fails if someone else got in meanwhile.
      const commit = await locked(() => {
        let atomic = kv.atomic()
          .check(slotEntry)
          .set(keys[index], value, { expireIn: leaseMs });
        if (entry !== null) atomic = withAudit(atomic, entry, auditRetentionMs);
        return atomic.commit();
      });
      if (commit.ok) {
        const lease: Lease = {
          generation,
          slot: group[index],
          versionstamp: commit.versionstamp,
          expiresAtMs,
        };
        if (entry !== null) lease.audit = entry;
        return lease;
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
      toStoredEntries(group, value).forEach((entry, index) => onChange(group[index], entry));
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
  for (const group of chunks(services, SERVICES_PER_CALL)) {
    let reader: RecordReader;
    try {
      reader = kv.watch(stateKeys(group)).getReader();
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
