/**
 * Half-open across the fleet: probe leases.
 *
 * An `open` record whose `probeAt` passed is half-open for every instance at once (derived, no
 * write). A request that finds it so, with no lease in hand, is rejected and starts (single
 * flight) a lease race: the slots `["breakwater", "probe", service, generation, 0..halfOpenProbes-1]`
 * are claimed by compare-and-set, each holding `{ instanceId, expiresAtMs }`. Only a caller that
 * got a slot gets `probe: true`, so exactly `halfOpenProbes` requests reach the upstream per
 * round across the fleet. A slot expires `probeLeaseMs` after it was taken (so a prober that
 * crashed cannot wedge the fleet half-open); a probe whose client went away hands its slot back.
 * A probe's success closes the breaker (new generation); its failure re-opens it for
 * `recoveryTimeoutMs * 2^k` (jittered, capped); a result that arrives after another probe
 * already moved the generation on is ignored.
 *
 * This module holds the slots this instance won and has not handed to a request yet, and runs
 * the race in the background; the outcomes are applied by the fleet breaker.
 *
 * @module
 */
import type { AuditEntry } from "./audit.ts";
import type { KvSession } from "./kv_session.ts";
import type { Lease } from "./kv_store.ts";

/** One service's probe slots as this instance holds them. */
export interface ProbeLeases {
  /** The service the slots belong to. */
  readonly service: string;
  /** `halfOpenProbes`: slots per half-open round. */
  readonly slots: number;
  /** How long a taken slot stays taken (`probeLeaseMs`). */
  readonly leaseMs: number;
  /** How long to wait before racing again when every slot was taken (the re-sync interval). */
  readonly retryAfterMs: number;
  /** Slots we won and have not handed to a request yet. */
  held: Lease[];
  /** A race is in flight. */
  requested: boolean;
  /** No new race before this (epoch ms). */
  retryAtMs: number;
}

/** No slots yet for `service`. */
export function createProbeLeases(
  service: string,
  slots: number,
  leaseMs: number,
  retryAfterMs: number,
): ProbeLeases {
  return { service, slots, leaseMs, retryAfterMs, held: [], requested: false, retryAtMs: 0 };
}

/** Hands out a held slot of round `generation` that has not expired, or null. */
export function takeLease(leases: ProbeLeases, generation: number, atMs: number): Lease | null {
  while (leases.held.length > 0) {
    const lease = leases.held.shift()!;
    if (lease.generation === generation && lease.expiresAtMs > atMs) return lease;
  }
  return null;
}

/** The fleet moved to `generation`: slots of other rounds are worthless, and a race may start. */
export function keepLeasesOf(leases: ProbeLeases, generation: number): void {
  leases.held = leases.held.filter((lease) => lease.generation === generation);
  leases.retryAtMs = 0;
}

/** KV went away: held slots no longer mean anything to the fleet. */
export function dropLeases(leases: ProbeLeases): void {
  leases.held = [];
}

/**
 * Starts a race for a slot of round `generation` unless one is running or was lost recently.
 * A won slot is kept only while `isCurrent(generation)` still holds when it arrives; otherwise
 * it is handed back at once. A won slot is written to the audit timeline with the slot itself
 * (a `probe` entry), and handed to `onAudit`.
 */
export function requestLease(
  leases: ProbeLeases,
  session: KvSession,
  generation: number,
  atMs: number,
  now: () => number,
  isCurrent: (generation: number) => boolean,
  onAudit: (entry: AuditEntry) => void = () => {},
): void {
  if (leases.requested || atMs < leases.retryAtMs || !session.started()) return;
  leases.requested = true;
  session.inBackground(async () => {
    try {
      const lease = await session.call((store) =>
        store.acquireLease(leases.service, generation, leases.slots, now(), leases.leaseMs, true)
      );
      if (lease?.audit !== undefined) onAudit(lease.audit);
      if (lease === null) {
        // Every slot is taken: ask again after a re-sync, not on every rejected request.
        leases.retryAtMs = now() + leases.retryAfterMs;
      } else if (isCurrent(lease.generation)) {
        leases.held.push(lease);
      } else {
        await session.call((store) => store.releaseLease(leases.service, lease));
      }
    } finally {
      leases.requested = false;
    }
  });
}

/** Hands a slot back in the background (a probe whose client went away: nothing was learned). */
export function releaseLease(leases: ProbeLeases, session: KvSession, lease: Lease): void {
  session.inBackground(async () => {
    await session.call((store) => store.releaseLease(leases.service, lease));
  });
}
