/**
 * Keeping the fleet's trip bounded as the fleet grows: the hold-back and the pulse.
 *
 * The failing calls a fleet sends past `failureThreshold` are its failing call rate times how
 * long the news takes to reach every instance. On one host, ten processes writing to one SQLite
 * file queue for its write lock: a failure report that takes 2-3 ms alone took 20-150 ms (up to
 * 400 ms) when all ten reported at once, which is exactly when an outage starts. At 50 failing
 * calls per second per instance, every instance then sent several failing calls before it
 * heard: ten instances let 34-41 failures through on one file and 40-49 over a KV Connect
 * server (threshold 5; ten independent breakers: 50). No poll interval fixes a path whose
 * writes are slower than the gap between an instance's calls, so:
 *
 * - **Hold-back.** A failure holds this instance's new calls to the service until the fleet
 *   has counted it: its report (a write) has landed in KV and a read of the window issued after
 *   it has come back, re-read (after about as long as the write took, for at most
 *   {@link MAX_SETTLE_MS}) while other instances' counts still rise. The read either reaches
 *   the threshold (the instance opens at once and trips the fleet record) or not (calls
 *   resume). Reports queue behind each other for the write lock, so by the time ours has
 *   landed, the failures reported before it are visible too. Each instance thus adds about one
 *   failure, plus the calls it had in flight, before it stops. It applies only when it matters:
 *   when this failure plus one from each other instance sending to the service (exchanged about
 *   once a second, `fleet_activity.ts`) would reach the threshold. An instance alone with a
 *   service never holds (its own count is exact), nor does a fleet far below its threshold.
 * - **Pulse.** Every failure report also rewrites `["breakwater", "pulse", service]` with the
 *   reporter's counts, in the same commit. Instances read it with the breaker records at every
 *   re-sync, and by watch where watch is shared (KV Connect, Deno Deploy: `watchIsShared`), so
 *   they know the others' counts without listing their keys, open on their own next failure
 *   when that reaches the threshold, and read the window at once (and at every re-sync while
 *   the count rises: a "hot" service, {@link HOT_MS}). Over KV Connect a trip then reaches every
 *   instance in one report plus one watch delivery, without waiting for the compare-and-set.
 *
 * Measured (`bench/scenarios/fleet_scale.ts`: light instance processes at 50 req/s each,
 * threshold 5, the instances, the upstream and the KV server on two shared cores; median (max)
 * of 4 runs): ten instances on one file 11 (12) failed calls, over KV Connect 11 (16), against
 * 30 (45) and 37 (52) with the hold-back off in the same runs; every instance stopped sending
 * 25 ms (median) after the threshold-th failure. Three instances: 7 and 6; one: 5. That is one
 * failing call per instance: the call each sends before anything of the outage can have
 * reached it (all ten send one within 20 ms; the first report lands after a KV commit, 3 ms at
 * best). Below that only a fleet-wide hold on instances that have not failed yet would go
 * (a "trial allowance" handed out once the count nears the threshold), and it was decided
 * against: on every failure near the threshold (with ten instances and threshold 5, every
 * failure) it would reject the service's traffic on every instance for the tens of ms a pulse,
 * a read and a trial call take, to save about four failed calls per outage. (With ten instances
 * and threshold 5 the fleet is near the threshold before any failure, so an allowance would
 * have to be asked of KV for every call.) Holding every instance that hears a pulse near the
 * threshold until its read comes back was tried: ten instances over KV Connect at 50 req/s, one
 * call in flight, 10 failed calls in 7 runs of 8 (8 in one) against 10 in 8 of 8 without; the
 * first failing calls go out before any pulse arrives, so it was not kept.
 *
 * The price of the hold-back: while a failure is being counted (one KV round trip; measured on
 * a quiet fleet of five instances: median 4 ms on one file, 7 ms over an in-process KV Connect
 * server, at most 20-40 ms; tens of ms on a shared file in a burst or on a distant KV), the
 * service's other requests on that one instance are answered 503 `breaker_open` in state
 * `half_open`, with a Retry-After of one second. (The settling re-read only follows a write
 * more than three times slower than this instance's quiet writes, or a rising count.) A fleet whose breaker stays closed sees
 * fewer than `failureThreshold` failures per `windowMs` (else it trips), so this happens at most
 * that often: with the defaults, at most one failure every two seconds fleet-wide, each holding
 * one instance for a few ms (at 1000 req/s on it, a handful of requests). `holdBack: false`
 * turns it off and accepts an overshoot that grows with the fleet's size and rate. The pulse
 * costs nothing per request: one more key in each failure report's commit, and window reads
 * only while a service is hot.
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
