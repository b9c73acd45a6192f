/**
 * Which instances are sending requests to which service: what the hold-back (`hold.ts`) needs
 * to know how far past the threshold the fleet could go before a trip reaches everyone.
 *
 * Each instance marks a service as busy when it records an attempt (one boolean store on the
 * request path, no KV), and every `intervalMs`, at a re-sync, writes the busy services under
 * its own key `["breakwater", "activity", instanceId]` (one write for all services, with
 * `expireIn`) and lists every instance's key. An instance counts as sending to a service while
 * its latest write, no older than {@link ACTIVE_FOR_INTERVALS} intervals, names it. An
 * instance writes only in intervals it was busy, and reads only while it was busy within the
 * last {@link ACTIVE_FOR_INTERVALS} intervals: a quiet instance does no KV work for this.
 *
 * @module
 */
import type { Activity, BreakerStore } from "./kv_store.ts";

/** An instance counts as sending while its latest write is at most this many intervals old. */
export const ACTIVE_FOR_INTERVALS = 3;
/** At most this many instances' activity is read (a bound on one read's size). */
export const MAX_ACTIVITY_READ = 1000;

/** This instance's view of the fleet's activity. */
export interface FleetActivity {
  /** How often activity is written and read. */
  readonly intervalMs: number;
  /** Other instances' latest activity as last read. */
  others: Activity[];
  /** When `others` was read (epoch ms); -Infinity before the first read. */
  readAtMs: number;
  /** No exchange before this (epoch ms). */
  nextAtMs: number;
  /** When this instance last wrote that it was busy (epoch ms). */
  busyAtMs: number;
}

/** No activity known yet. */
export function createFleetActivity(intervalMs: number): FleetActivity {
  return { intervalMs, others: [], readAtMs: -Infinity, nextAtMs: -Infinity, busyAtMs: -Infinity };
}

/** True when the fleet's activity was read recently enough to trust. */
export function activityKnown(activity: FleetActivity, atMs: number): boolean {
  return activity.readAtMs >= atMs - ACTIVE_FOR_INTERVALS * activity.intervalMs;
}

/**
 * How many other instances are sending to `service` as last read; 0 when unknown or too old
 * to trust (the hold-back then decides on what this instance knows of the counts alone).
 */
export function othersSending(activity: FleetActivity, service: string, atMs: number): number {
  if (!activityKnown(activity, atMs)) return 0;
  const oldestMs = atMs - ACTIVE_FOR_INTERVALS * activity.intervalMs;
  let count = 0;
  for (const other of activity.others) {
    if (other.atMs >= oldestMs && other.services.includes(service)) count++;
  }
  return count;
}

/** True when an exchange is due (at most one per interval). */
export function activityDue(activity: FleetActivity, atMs: number): boolean {
  return atMs >= activity.nextAtMs;
}

/**
 * Writes the services this instance was busy with since the last exchange and reads everyone's.
 * `call` runs one store call within the KV time limit. Returns how long the write took (null
 * when nothing was written): a quiet KV's write time, which tells a congested one apart.
 */
export async function exchangeActivity(
  activity: FleetActivity,
  busy: readonly string[],
  instanceId: string,
  call: <T>(operation: (store: BreakerStore) => Promise<T>) => Promise<T>,
  now: () => number,
): Promise<number | null> {
  const atMs = now();
  activity.nextAtMs = atMs + activity.intervalMs;
  let writeMs: number | null = null;
  if (busy.length > 0) {
    activity.busyAtMs = atMs;
    const expireInMs = (ACTIVE_FOR_INTERVALS + 1) * activity.intervalMs;
    await call((store) => store.publishActivity(busy, atMs, expireInMs));
    writeMs = now() - atMs;
  } else if (activity.busyAtMs < atMs - ACTIVE_FOR_INTERVALS * activity.intervalMs) {
    return null;
  }
  const everyone = await call((store) => store.readActivity(MAX_ACTIVITY_READ));
  activity.others = everyone.filter((each) => each.instanceId !== instanceId);
  activity.readAtMs = now();
  return writeMs;
}
