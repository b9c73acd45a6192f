/**
 * The fleet breaker's session with Deno KV: opening the store, keeping this instance's copy of
 * every breaker record fresh, and deciding when KV is not to be trusted.
 *
 * - **Connect.** `start()` takes the owner's handle, or opens one with `reopenKv`. An open that
 *   fails (file locked, server down) does not fail start-up: the instance serves degraded and
 *   keeps trying in the background.
 * - **Sync.** Every record is re-read with one `getMany` every `syncIntervalMs`, and every
 *   `alertSyncIntervalMs` while this instance has seen failures within a window (an outage is
 *   when other instances' trips must reach us fast). On a SQLite file shared by several
 *   processes `kv.watch` does not see the other processes' writes, so the re-sync is what
 *   carries them. After each re-sync the owner's `onSync` runs its own background KV work
 *   (window reads, the activity exchange, the fleet retry budget), so there is one rhythm and
 *   one degraded mode for all of it.
 * - **Watch.** `kv.watch` on the records delivers changes at once within one process and from a
 *   KV Connect server.
 * - **Degraded mode.** Every KV call is limited to `kvTimeoutMs`; any failure or timeout flips
 *   the session to degraded (the local breakers decide), and the next successful re-sync rejoins.
 * - **Reopen.** A call that failed (rather than timed out), or a watch that ended, means the
 *   handle itself may be dead: with `reopenKv` a fresh one is opened every `reopenIntervalMs`
 *   until one answers.
 *
 * The session knows nothing about breakers: it hands records to `onEntry` and says when it goes
 * degraded and comes back (`onDegraded`, `onRejoin`).
 *
 * @module
 */
import { withTimeout } from "./_kv_retry.ts";
import {
  type BreakerStore,
  createKvBreakerStore,
  type RecordWatch,
  type StoredEntry,
} from "./kv_store.ts";

/** Options of {@link createKvSession}. */
export interface KvSessionOptions {
  /** The owner's KV handle (never closed by the session), or null. */
  kv: Deno.Kv | null;
  /**
   * Opens a fresh handle (owned and closed by the session unless `kvIsLent`); `stale` is the
   * handle that failed (null at start-up). See `FleetBreakerOptions.reopenKv`.
   */
  reopenKv?: (stale: Deno.Kv | null) => Promise<Deno.Kv>;
  /** Handles from `reopenKv` belong to the opener: the session never closes them. */
  kvIsLent?: boolean;
  /** The services whose records are synced and watched, in configuration order. */
  names: readonly string[];
  /** Written into records and leases by the store. */
  instanceId: string;
  /** The clock (epoch ms). */
  now: () => number;
  /** A number in [0, 1), for the store's lock-retry jitter. */
  random: () => number;
  /** Re-sync interval while quiet. */
  syncIntervalMs: number;
  /** Re-sync interval while {@link KvSession.alertUntil} is in the future. */
  alertSyncIntervalMs: number;
  /** A KV call slower than this counts as KV trouble. */
  kvTimeoutMs: number;
  /** Pause between `reopenKv` attempts. */
  reopenIntervalMs: number;
  /** How long audit entries stay in KV (see `audit.ts`). */
  auditRetentionMs?: number;
  /** Wraps the KV store (tests count its calls with it). */
  wrapStore?: (store: BreakerStore) => BreakerStore;
  /** A record read from KV (re-sync or watch) while the session is in charge. */
  onEntry(name: string, entry: StoredEntry): void;
  /** The session just went degraded (already reported by {@link KvSession.degraded}). */
  onDegraded(): void;
  /** The session is back from degraded mode; records from before may carry stale versionstamps. */
  onRejoin(): void;
  /**
   * Runs after every successful re-sync, before the next one is scheduled (window reads while
   * an outage may be starting, the fleet retry budget's exchange). Errors are swallowed.
   */
  onSync?(): Promise<void>;
}

/** One breaker's connection to KV. */
export interface KvSession {
  /** KV is configured and trusted: the fleet records decide. Memory only. */
  active(): boolean;
  /** True while KV is unavailable or slow. */
  degraded(): boolean;
  /** `start()` was called. */
  started(): boolean;
  /** `close()` was called: background loops stop. */
  closed(): boolean;
  /** A KV call within `kvTimeoutMs`; any failure makes the session degraded, then rethrows. */
  call<T>(operation: (store: BreakerStore) => Promise<T>): Promise<T>;
  /** Like {@link call}, on the raw handle (for KV work that is not the breaker's own). */
  callKv<T>(operation: (kv: Deno.Kv) => Promise<T>): Promise<T>;
  /** Fire-and-forget KV work: tracked so `close()` waits for it, errors swallowed. */
  inBackground(work: () => Promise<void>): void;
  /** Re-sync at the alert interval until `untilMs` (moves a pending slow re-sync forward). */
  alertUntil(untilMs: number): void;
  /** Connects, reads every record, starts watch and re-sync. Never throws because of KV. */
  start(): Promise<void>;
  /** Stops timers and the watch, waits for background work, closes handles it opened. */
  close(): Promise<void>;
}

/** Everything a session keeps between calls. */
interface Session {
  readonly options: KvSessionOptions;
  kv: Deno.Kv | null;
  /** A handle the session opened itself (and must close). */
  ownedKv: Deno.Kv | null;
  store: BreakerStore | null;
  degraded: boolean;
  reopenNeeded: boolean;
  nextReopenAtMs: number;
  started: boolean;
  closed: boolean;
  closing: Promise<void> | null;
  watch: RecordWatch | null;
  syncTimer: ReturnType<typeof setTimeout> | undefined;
  syncDueAtMs: number;
  alertUntilMs: number;
  readonly background: Set<Promise<unknown>>;
}

/**
 * Creates the KV session of one fleet breaker. Nothing touches KV before `start()`.
 *
 * @example
 * ```ts
 * const session = createKvSession({
 *   kv, names: ["users"], instanceId: "gw-1", now: Date.now, random: Math.random,
 *   syncIntervalMs: 250, alertSyncIntervalMs: 10, kvTimeoutMs: 1000, reopenIntervalMs: 1000,
 *   onEntry: (name, entry) => console.log(name, entry.record.state),
 *   onDegraded: () => {}, onRejoin: () => {},
 * });
 * await session.start();
 * ```
 */
export function createKvSession(options: KvSessionOptions): KvSession {
  const session: Session = {
    options,
    kv: options.kv,
    ownedKv: null,
    store: null,
    degraded: false,
    reopenNeeded: false,
    nextReopenAtMs: 0,
    started: false,
    closed: false,
    closing: null,
    watch: null,
    syncTimer: undefined,
    syncDueAtMs: Infinity,
    alertUntilMs: -Infinity,
    background: new Set(),
  };
  return {
    active: () => session.store !== null && !session.degraded,
    degraded: () => session.degraded,
    started: () => session.started,
    closed: () => session.closed,
    call: (operation) => kvCall(session, operation),
    callKv: (operation) =>
      kvCall(session, () => {
        // The handle behind the current store (a reopen replaces both together).
        const handle = session.kv;
        if (handle === null) throw new Error("breaker: no KV handle");
        return operation(handle);
      }),
    inBackground: (work) => inBackground(session, work),
    alertUntil(untilMs) {
      if (untilMs <= session.alertUntilMs) return;
      session.alertUntilMs = untilMs;
      expediteSync(session);
    },
    start: () => start(session),
    close() {
      session.closing ??= shutdown(session);
      return session.closing;
    },
  };
}

function makeStore(session: Session, handle: Deno.Kv): BreakerStore {
  const { instanceId, random, wrapStore, auditRetentionMs } = session.options;
  const kvStore = createKvBreakerStore(handle, { instanceId, random, auditRetentionMs });
  return wrapStore ? wrapStore(kvStore) : kvStore;
}

function enterDegraded(session: Session): void {
  if (session.degraded || session.closed) return;
  session.degraded = true;
  session.options.onDegraded();
}

async function kvCall<T>(
  session: Session,
  operation: (store: BreakerStore) => Promise<T>,
): Promise<T> {
  const current = session.store;
  if (current === null || session.closed) throw new Error("breaker: no KV store");
  try {
    return await withTimeout(operation(current), session.options.kvTimeoutMs);
  } catch (error) {
    // A call on a handle we already replaced says nothing about the new one.
    if (current === session.store) {
      enterDegraded(session);
      // A timeout is a slow store, not a dead handle: re-syncing is enough to come back.
      if (!(error instanceof Error && error.name === "KvTimeoutError")) {
        session.reopenNeeded = true;
      }
    }
    throw error;
  }
}

function track(session: Session, task: Promise<unknown>): void {
  session.background.add(task);
  task.finally(() => session.background.delete(task));
}

function inBackground(session: Session, work: () => Promise<void>): void {
  track(
    session,
    work().catch(() => {
      // Already handled: kvCall turned it into degraded mode.
    }),
  );
}

function startWatch(session: Session): void {
  const { names } = session.options;
  if (session.store === null || session.watch !== null || session.closed || names.length === 0) {
    return;
  }
  const watched = session.store;
  // The watch can fail while it is being created (a handle closed under us calls onError
  // before watchRecords returns): the handle is then not kept.
  let handle: RecordWatch | null = null;
  let failed = false;
  handle = watched.watchRecords(
    names,
    (name, entry) => {
      if (session.store === watched && !session.degraded) session.options.onEntry(name, entry);
    },
    () => {
      failed = true;
      if (session.store !== watched) return;
      if (handle !== null && session.watch === handle) session.watch = null;
      enterDegraded(session);
      session.reopenNeeded = true;
    },
  );
  if (failed) {
    track(session, handle.close());
    return;
  }
  session.watch = handle;
}

async function stopWatch(session: Session): Promise<void> {
  const running = session.watch;
  session.watch = null;
  await running?.close();
}

function closeQuietly(handle: Deno.Kv | null): void {
  try {
    handle?.close();
  } catch {
    // Already closed.
  }
}

/** Replaces a dead handle with a fresh one from `reopenKv`, at most every `reopenIntervalMs`. */
async function reopen(session: Session): Promise<void> {
  const { reopenKv, reopenIntervalMs, kvTimeoutMs, now } = session.options;
  if (reopenKv === undefined || !session.reopenNeeded) return;
  const atMs = now();
  if (atMs < session.nextReopenAtMs) return;
  session.nextReopenAtMs = atMs + reopenIntervalMs;
  let fresh: Deno.Kv;
  try {
    fresh = await withTimeout(reopenKv(session.kv), kvTimeoutMs);
  } catch {
    return;
  }
  if (session.closed) {
    if (!session.options.kvIsLent) fresh.close();
    return;
  }
  await stopWatch(session);
  const previous = session.ownedKv;
  session.kv = fresh;
  session.ownedKv = session.options.kvIsLent ? null : fresh;
  session.store = makeStore(session, fresh);
  session.reopenNeeded = false;
  closeQuietly(previous);
}

/** Re-reads every record; the way back from degraded mode. Never throws. */
async function sync(session: Session): Promise<void> {
  if (session.closed) return;
  if (session.degraded) await reopen(session);
  const current = session.store;
  if (current === null || session.closed) return;
  const { names } = session.options;
  let entries: StoredEntry[];
  try {
    entries = await kvCall(session, (kvStore) => kvStore.readRecords(names));
  } catch {
    return;
  }
  if (session.closed || current !== session.store) return;
  if (session.degraded) {
    session.degraded = false;
    session.options.onRejoin();
  }
  entries.forEach((entry, index) => session.options.onEntry(names[index], entry));
  startWatch(session);
  if (session.options.onSync !== undefined && !session.closed) {
    await session.options.onSync().catch(() => {});
  }
}

function scheduleSync(session: Session): void {
  if (session.closed) return;
  const { now, alertSyncIntervalMs, syncIntervalMs } = session.options;
  const delayMs = now() < session.alertUntilMs ? alertSyncIntervalMs : syncIntervalMs;
  session.syncDueAtMs = now() + delayMs;
  session.syncTimer = setTimeout(() => {
    session.syncTimer = undefined;
    session.syncDueAtMs = Infinity;
    track(session, sync(session).finally(() => scheduleSync(session)));
  }, delayMs);
}

/** Moves a pending slow re-sync forward once failures start (alert mode). */
function expediteSync(session: Session): void {
  if (session.closed || session.syncTimer === undefined) return;
  if (session.syncDueAtMs - session.options.now() <= session.options.alertSyncIntervalMs) return;
  clearTimeout(session.syncTimer);
  session.syncTimer = undefined;
  scheduleSync(session);
}

async function start(session: Session): Promise<void> {
  if (session.started || session.closed) return;
  session.started = true;
  const { reopenKv, kvTimeoutMs } = session.options;
  if (session.kv === null && reopenKv !== undefined) {
    // The owner hands over an opener instead of a handle: open it now, and when that fails
    // (file locked, server down) serve degraded and keep trying in the background.
    try {
      const opened = await withTimeout(reopenKv(null), kvTimeoutMs);
      if (session.closed) {
        if (!session.options.kvIsLent) opened.close();
        return;
      }
      session.kv = opened;
      session.ownedKv = session.options.kvIsLent ? null : opened;
    } catch {
      enterDegraded(session);
      session.reopenNeeded = true;
      scheduleSync(session);
      return;
    }
  }
  if (session.kv !== null) {
    session.store = makeStore(session, session.kv);
    await sync(session);
    scheduleSync(session);
  }
}

async function shutdown(session: Session): Promise<void> {
  session.closed = true;
  clearTimeout(session.syncTimer);
  session.syncTimer = undefined;
  await stopWatch(session);
  // Loops re-check `closed`; wait until every background KV call settled.
  while (session.background.size > 0) await Promise.allSettled([...session.background]);
  clearTimeout(session.syncTimer);
  closeQuietly(session.ownedKv);
  session.ownedKv = null;
}
