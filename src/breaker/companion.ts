/**
 * Fleet-wide parts that ride on the breaker's KV session instead of opening their own (the
 * fleet retry budget in `src/retry/fleet_budget.ts`). One gateway has one KV handle: a second
 * opener would close the breaker's handle, and a second re-sync loop would double the
 * background reads. A companion is attached at `start()`, called after every re-sync, and
 * detached at `close()`; its KV calls share the breaker's time limit and degraded mode.
 *
 * A companion outlives breakers: a reload that changes a breaker setting builds a new breaker,
 * which attaches the same companion (its counts carry over) while the old one still finishes
 * its requests. The old breaker's re-syncs and its `detach` then name an access that is no
 * longer attached, and the companion ignores them.
 *
 * @module
 */

/** What the breaker lends a companion. */
export interface FleetKvAccess {
  /** This instance's id (the one the breaker writes into its keys). */
  readonly instanceId: string;
  /** The breaker's clock (epoch ms). */
  now(): number;
  /** KV is configured and trusted right now (not degraded). Memory only. */
  active(): boolean;
  /**
   * One call on the KV handle within the breaker's KV time limit; a failure or a timeout makes
   * the whole instance degraded (local breakers) until a re-sync answers, then rethrows.
   */
  call<T>(operation: (kv: Deno.Kv) => Promise<T>): Promise<T>;
}

/** A part that does fleet-wide KV work in the breaker's rhythm. */
export interface FleetKvCompanion {
  /** Called once when a breaker starts; replaces the access of any breaker before it. */
  attach(access: FleetKvAccess): void;
  /**
   * Called after every successful re-sync (every `syncIntervalMs`, faster in an outage) with
   * the calling breaker's access: nothing happens unless that is the one attached.
   */
  sync(from?: FleetKvAccess): Promise<void>;
  /** Called once when a breaker closes: no KV work through `from` (when attached) after this. */
  detach(from?: FleetKvAccess): void;
}
