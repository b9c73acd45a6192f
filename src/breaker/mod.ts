/**
 * Breakwater's fleet-shared circuit breaker: one breaker per service for every gateway
 * instance, kept in Deno KV, with admission decided from memory.
 *
 * @example
 * ```ts
 * import { createFleetBreaker } from "./src/breaker/mod.ts";
 * const breaker = createFleetBreaker({ kv, services, instanceId: crypto.randomUUID() });
 * await breaker.start();
 * const admission = breaker.admit("users");
 * ```
 *
 * @module
 */
export type {
  Admission,
  AttemptOutcome,
  BreakerState,
  BreakerView,
  TransitionEvent,
} from "./types.ts";
export { classifyOutcome, isFailure, type OutcomeKind, parseStatusRanges } from "./outcome.ts";
export {
  type BreakerEvent,
  type BreakerPolicy,
  type BreakerRecord,
  type ForceAction,
  INITIAL_RECORD,
  isProbeDue,
  openDurationMs,
  retryAfterMs,
  shouldTrip,
  stateAt,
  type StoredState,
  transition,
} from "./policy.ts";
export {
  type BreakerStore,
  createKvBreakerStore,
  type KvBreakerStoreOptions,
  type Lease,
  type StoredEntry,
  type TransitionResult,
} from "./kv_store.ts";
export {
  createFleetBreaker,
  type FleetBreaker,
  type FleetBreakerOptions,
  type ForceOptions,
} from "./fleet.ts";
export { type AuditEntry, type AuditKind, DEFAULT_AUDIT_RETENTION_MS } from "./audit.ts";
export type { FleetKvAccess, FleetKvCompanion } from "./companion.ts";
export { createKvLender, type KvLender } from "./kv_lender.ts";
