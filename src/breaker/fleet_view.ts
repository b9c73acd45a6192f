/**
 * Which gateway instances make up the fleet, as an incident view needs it: every instance
 * writes a heartbeat under its own key every `intervalMs` while it is part of the fleet (KV
 * answering), and anyone lists the keys to see who is alive, who went silent and who stopped.
 *
 * | key | value | written |
 * | --- | --- | --- |
 * | `["breakwater", "instance", instanceId]` | {@link Heartbeat} | every `intervalMs` after a re-sync, `expireIn` {@link HEARTBEAT_RETENTION_MS} |
 *
 * An instance that cannot reach KV (degraded: its breakers are local) cannot say so through KV:
 * its heartbeat stops, and the others see it *silent* (alive but cut off from KV, or gone
 * without a word). When it rejoins, its next heartbeat carries the degraded period it had
 * (`lastDegraded`), so the fleet view can say "degraded 12:01:03-12:01:40" afterwards. A clean
 * shutdown writes `stoppedAtMs`, so a stopped instance is not mistaken for a silent one. Keys
 * expire after {@link HEARTBEAT_RETENTION_MS}, so a crashed instance stays visible through an
 * incident and then disappears.
 *
 * Cost: one small KV write per instance per `intervalMs` (default 2 s), no read unless someone
 * asks for the fleet (the admin API, the dashboard). Nothing of it runs on the request path.
 *
 * @module
 */
import { retryWhenLocked } from "./_kv_retry.ts";

/** Default heartbeat period. */
export const HEARTBEAT_INTERVAL_MS = 2000;
/** An instance counts as alive while its heartbeat is at most this many periods old. */
export const ALIVE_FOR_INTERVALS = 3;
/** Heartbeats expire after this (`expireIn`): long enough to span an incident. */
export const HEARTBEAT_RETENTION_MS = 10 * 60 * 1000;
/** At most this many instances are listed (a bound on one read). */
export const MAX_FLEET_READ = 1000;

/** A period this instance spent degraded (epoch ms). */
export interface DegradedPeriod {
  /** When it went degraded. */
  fromMs: number;
  /** When it rejoined. */
  toMs: number;
}

/** What an instance writes about itself. */
export interface Heartbeat {
  /** The instance. */
  instanceId: string;
  /** When it was written (epoch ms, the writer's clock). */
  atMs: number;
  /** When the instance's breaker started (epoch ms). */
  startedAtMs: number;
  /** The services it is configured with. */
  services: string[];
  /** Times it went degraded since it started. */
  degradedCount: number;
  /** Its latest degraded period that ended, or null. */
  lastDegraded: DegradedPeriod | null;
  /** Set by a clean shutdown (epoch ms); null while running. */
  stoppedAtMs: number | null;
}

/** One instance as the fleet view shows it. */
export interface FleetMember extends Heartbeat {
  /**
   * `alive`: a heartbeat within {@link ALIVE_FOR_INTERVALS} periods; `silent`: older (cut off
   * from KV, i.e. degraded, or gone without a word); `stopped`: shut down cleanly.
   */
  status: "alive" | "silent" | "stopped";
  /** Milliseconds since its latest heartbeat (by the reader's clock). */
  heartbeatAgeMs: number;
  /** True for the instance that answers. */
  self: boolean;
  /**
   * Degraded (breakers local, KV unreachable): known for the instance that answers; for the
   * others false while alive (a recent heartbeat means KV answered it within
   * {@link ALIVE_FOR_INTERVALS} periods) and null (unknown) while silent or stopped.
   */
  degraded: boolean | null;
  /** Since when the answering instance is degraded (epoch ms), else null. */
  degradedSinceMs: number | null;
}

/** The fleet as one instance sees it. */
export interface FleetSnapshot {
  /** The instance that answers. */
  instanceId: string;
  /** The heartbeat period. */
  intervalMs: number;
  /** False while this instance cannot read KV: then `members` holds only itself. */
  known: boolean;
  /** Instances, this one first, then alive, silent and stopped ones by id. */
  members: FleetMember[];
}

/** One breaker's heartbeat bookkeeping (memory). */
export interface HeartbeatState {
  readonly instanceId: string;
  readonly intervalMs: number;
  readonly startedAtMs: number;
  readonly services: readonly string[];
  /** No write before this (epoch ms). */
  nextAtMs: number;
  /** The versionstamp of our latest write (a stop marker is only written over our own). */
  versionstamp: string | null;
  degradedSinceMs: number | null;
  degradedCount: number;
  lastDegraded: DegradedPeriod | null;
}

/** The key of an instance's heartbeat. */
export function heartbeatKey(instanceId: string): Deno.KvKey {
  return ["breakwater", "instance", instanceId];
}

/** Fresh bookkeeping; the first heartbeat is due at once. */
export function createHeartbeatState(
  instanceId: string,
  services: readonly string[],
  startedAtMs: number,
  intervalMs = HEARTBEAT_INTERVAL_MS,
): HeartbeatState {
  return {
    instanceId,
    intervalMs,
    startedAtMs,
    services,
    nextAtMs: -Infinity,
    versionstamp: null,
    degradedSinceMs: null,
    degradedCount: 0,
    lastDegraded: null,
  };
}

/** Notes that the instance went degraded (`true`) or rejoined (`false`) at `atMs`. */
export function noteDegraded(state: HeartbeatState, degraded: boolean, atMs: number): void {
  if (degraded) {
    if (state.degradedSinceMs !== null) return;
    state.degradedSinceMs = atMs;
    state.degradedCount++;
    return;
  }
  if (state.degradedSinceMs === null) return;
  state.lastDegraded = { fromMs: state.degradedSinceMs, toMs: atMs };
  state.degradedSinceMs = null;
  // Rejoined: say so at the next re-sync rather than up to a period later.
  state.nextAtMs = -Infinity;
}

function heartbeatOf(state: HeartbeatState, atMs: number, stoppedAtMs: number | null): Heartbeat {
  return {
    instanceId: state.instanceId,
    atMs,
    startedAtMs: state.startedAtMs,
    services: [...state.services],
    degradedCount: state.degradedCount,
    lastDegraded: state.lastDegraded,
    stoppedAtMs,
  };
}

/** True when a heartbeat is due (at most one per period). */
export function heartbeatDue(state: HeartbeatState, atMs: number): boolean {
  return atMs >= state.nextAtMs;
}

/**
 * Writes the heartbeat when one is due (at most one per period). `random` jitters the retry of
 * a locked SQLite file.
 */
export async function beat(
  state: HeartbeatState,
  kv: Deno.Kv,
  atMs: number,
  random: () => number,
): Promise<void> {
  if (atMs < state.nextAtMs) return;
  state.nextAtMs = atMs + state.intervalMs;
  const result = await retryWhenLocked(
    () =>
      kv.set(heartbeatKey(state.instanceId), heartbeatOf(state, atMs, null), {
        expireIn: HEARTBEAT_RETENTION_MS,
      }),
    random,
  );
  state.versionstamp = result.versionstamp;
}

/**
 * Marks the instance stopped, unless another breaker of the same instance (a reload built a new
 * one) wrote after us: then the instance lives on and nothing is written.
 */
export async function markStopped(
  state: HeartbeatState,
  kv: Deno.Kv,
  atMs: number,
  random: () => number,
): Promise<void> {
  if (state.versionstamp === null) return;
  const key = heartbeatKey(state.instanceId);
  await retryWhenLocked(
    () =>
      kv.atomic()
        .check({ key, versionstamp: state.versionstamp })
        .set(key, heartbeatOf(state, atMs, atMs), { expireIn: HEARTBEAT_RETENTION_MS })
        .commit(),
    random,
  );
}

/** Checks a value read from KV (another version may have written something else). */
export function parseHeartbeat(instanceId: unknown, value: unknown): Heartbeat | null {
  if (typeof instanceId !== "string" || typeof value !== "object" || value === null) return null;
  const beat = value as Record<string, unknown>;
  if (!Number.isFinite(beat.atMs) || !Number.isFinite(beat.startedAtMs)) return null;
  const last = beat.lastDegraded as Record<string, unknown> | null | undefined;
  const lastDegraded = typeof last === "object" && last !== null &&
      Number.isFinite(last.fromMs) && Number.isFinite(last.toMs)
    ? { fromMs: last.fromMs as number, toMs: last.toMs as number }
    : null;
  return {
    instanceId,
    atMs: beat.atMs as number,
    startedAtMs: beat.startedAtMs as number,
    services: Array.isArray(beat.services)
      ? beat.services.filter((name): name is string => typeof name === "string")
      : [],
    degradedCount: Number.isSafeInteger(beat.degradedCount) ? beat.degradedCount as number : 0,
    lastDegraded,
    stoppedAtMs: Number.isFinite(beat.stoppedAtMs) ? beat.stoppedAtMs as number : null,
  };
}

/** Every instance's heartbeat (at most {@link MAX_FLEET_READ}). */
export async function readHeartbeats(kv: Deno.Kv, random: () => number): Promise<Heartbeat[]> {
  return await retryWhenLocked(async () => {
    const out: Heartbeat[] = [];
    const prefix = ["breakwater", "instance"];
    for await (const entry of kv.list({ prefix }, { limit: MAX_FLEET_READ })) {
      const parsed = parseHeartbeat(entry.key[2], entry.value);
      if (parsed !== null) out.push(parsed);
    }
    return out;
  }, random);
}

const STATUS_ORDER = { alive: 0, silent: 1, stopped: 2 } as const;

/**
 * The fleet view from heartbeats read (null: KV could not be read) and this instance's own
 * memory, which always wins for itself (its heartbeat may be a period old, or missing while
 * it is degraded).
 *
 * @example
 * ```ts
 * const snapshot = describeFleet(await readHeartbeats(kv, Math.random), state, false, Date.now());
 * snapshot.members.filter((member) => member.status === "alive").length;
 * ```
 */
export function describeFleet(
  heartbeats: Heartbeat[] | null,
  state: HeartbeatState,
  selfDegraded: boolean,
  nowMs: number,
): FleetSnapshot {
  const aliveForMs = ALIVE_FOR_INTERVALS * state.intervalMs;
  const self: FleetMember = {
    ...heartbeatOf(state, nowMs, null),
    status: "alive",
    heartbeatAgeMs: 0,
    self: true,
    degraded: selfDegraded,
    degradedSinceMs: selfDegraded ? state.degradedSinceMs : null,
  };
  const others: FleetMember[] = (heartbeats ?? [])
    .filter((beat) => beat.instanceId !== state.instanceId)
    .map((beat) => {
      const heartbeatAgeMs = Math.max(0, nowMs - beat.atMs);
      const status = beat.stoppedAtMs !== null
        ? "stopped"
        : heartbeatAgeMs <= aliveForMs
        ? "alive"
        : "silent";
      return {
        ...beat,
        status,
        heartbeatAgeMs,
        self: false,
        degraded: status === "alive" ? false : null,
        degradedSinceMs: null,
      };
    });
  others.sort((a, b) =>
    STATUS_ORDER[a.status] - STATUS_ORDER[b.status] || a.instanceId.localeCompare(b.instanceId)
  );
  return {
    instanceId: state.instanceId,
    intervalMs: state.intervalMs,
    known: heartbeats !== null,
    members: [self, ...others],
  };
}
