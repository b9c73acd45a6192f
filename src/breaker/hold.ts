/**
 * Keeping the fleet's trip bounded as the fleet grows: the hold-back and the pulse.
 *
 * The failing calls a fleet sends past `failureThreshold` are its failing call rate times how
 * long the news takes to reach every instance. On one host, ten processes writing to one SQLite
 * file queue for its write lock: a failure report that takes 2-3 ms alone took 20-140 ms (up to
 * 400 ms) when all ten reported at once, which is exactly when an outage starts. At 50 failing
 * calls per second per instance, every instance then sent two or three failing calls before it
 * heard, and ten instances let 34-41 failures through (threshold 5; ten independent breakers:
 * 50). Over a KV Connect server, 40-49. No poll interval fixes a path whose writes are slower
 * than the gap between an instance's calls, so the fleet holds back instead:
 *
 * - **Hold-back.** A failure holds this instance's new calls to the service until the fleet
 *   has counted it: its report (a write) has landed in KV and a read of the window issued after
 *   it has come back. The read either reaches the threshold (the instance opens at once and
 *   trips the fleet record) or does not (calls resume). Reports queue behind each other for the
 *   write lock, so by the time ours has landed, the failures reported before it are visible
 *   too: the instances that failed first see the total that the others' first failures make.
 *   Each instance thus adds about one failure (plus the calls it had in flight) before it
 *   either stops or learns that the fleet is still below the threshold.
 * - **Pulse.** Every failure report also rewrites `["breakwater", "pulse", service]`, which
 *   instances read with the breaker records at every re-sync and watch where watch works (KV
 *   Connect, one process). An instance that sees a new pulse of the current generation reads
 *   the fleet's window at once and keeps re-reading it at the alert interval while the count
 *   rises (a "hot" service, {@link HOT_MS}); reaching the threshold opens it before its own
 *   first failure. Over KV Connect this carries a trip to every instance in about two round
 *   trips (the report, then one read), without waiting for the compare-and-set of the record.
 *
 * The price of the hold-back: while one failure is being counted (one KV round trip: a few ms
 * on a local file alone or over a nearby KV Connect server, tens of ms on a shared file in a
 * burst or a distant KV), the service's other requests on that instance are answered 503
 * `breaker_open` in state `half_open` with a short Retry-After. A service with a steady
 * trickle of failures under high load pays that per failure: roughly (failures per second) x
 * (round trip) x (requests per second) rejections, e.g. 1% failures at 1000 req/s and a 3 ms
 * round trip reject ~30 requests a second, 3% instead of 1%. It is what keeps the trip bounded
 * when instances outnumber the threshold; a gateway whose services fail steadily at high load
 * can turn it off (`holdBack: false`) and accept an overshoot that grows with the fleet. The
 * pulse costs nothing per request: it is one more key in each failure report's commit, and
 * window reads only while a service is hot.
 *
 * @module
 */

import { type FleetCounts, knownTotal } from "./fleet_counts.ts";
import type { BreakerPolicy } from "./policy.ts";

/**
 * True when one more failure from each of the `othersSending` instances would take the fleet
 * total this instance knows of (others as last read, plus ours) to the threshold: the fleet
 * could then pass it before the news reaches everyone. An instance alone with a service never
 * holds (its own count is exact); far below the threshold nobody does.
 */
export function nearThreshold(
  counts: FleetCounts,
  policy: BreakerPolicy,
  instanceId: string,
  atMs: number,
  othersSending: number,
): boolean {
  return knownTotal(counts, policy, instanceId, atMs) + othersSending >= policy.failureThreshold;
}

/**
 * How long a service stays hot after the last sign that the fleet is failing (our failure, a
 * new pulse, a window read whose total grew): its window is re-read at every re-sync meanwhile.
 */
export const HOT_MS = 1000;

/** The Retry-After of a request held back while a failure is counted (one second: the header's unit). */
export const HOLD_RETRY_AFTER_MS = 1000;

/** The longest a hold-back waits for other instances' reports to land (see the module note). */
export const MAX_SETTLE_MS = 250;
