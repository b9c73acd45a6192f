/**
 * Shared test helpers for the breaker: policies, a settable clock, a seeded random source,
 * temporary KV files. Waiting is `tests/_helpers/wait.ts`.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Admission } from "../../src/breaker/types.ts";
import type { BreakerConfig } from "../../src/config/schema.ts";
import { parseStatusRanges } from "../../src/config/status_ranges.ts";

/** A breaker policy with the contract's defaults, overridden where a test needs it. */
export function policy(overrides: Partial<BreakerConfig> = {}): BreakerConfig {
  return {
    failureThreshold: 5,
    windowMs: 10_000,
    recoveryTimeoutMs: 30_000,
    maxRecoveryTimeoutMs: 300_000,
    halfOpenProbes: 1,
    failureStatuses: parseStatusRanges("500-599"),
    slowCallMs: null,
    minInstances: 1,
    holdBack: true,
    ...overrides,
  };
}

/** A clock tests move by hand. */
export interface ManualClock {
  /** The current time (epoch ms). */
  now: () => number;
  /** Moves the clock (negative moves it back). */
  advance(ms: number): void;
  /** Sets the clock. */
  set(ms: number): void;
}

/** A {@link ManualClock} starting at `startMs`. */
export function manualClock(startMs = 1_700_000_000_000): ManualClock {
  let current = startMs;
  return {
    now: () => current,
    advance: (ms) => current += ms,
    set: (ms) => current = ms,
  };
}

/** A deterministic random source (mulberry32). */
export function seededRandom(seed = 42): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let value = state;
    value = Math.imul(value ^ (value >>> 15), value | 1);
    value ^= value + Math.imul(value ^ (value >>> 7), value | 61);
    return ((value ^ (value >>> 14)) >>> 0) / 4294967296;
  };
}

/** A fresh KV file in a temporary directory, removed by the returned cleanup. */
export async function tempKvPath(): Promise<{ path: string; remove: () => Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "breakwater-breaker-" });
  return {
    path: `${dir}/breaker.kv`,
    remove: () => Deno.remove(dir, { recursive: true }),
  };
}

/** Calls per store method, filled by {@link countingStore}. */
export type CallCounts = Record<string, number>;

/** Wraps a store so a test can count its calls (the store itself stays real). */
export function countingStore<S extends object>(store: S, counts: CallCounts): S {
  const wrapped = {} as Record<string, unknown>;
  for (const [name, method] of Object.entries(store)) {
    wrapped[name] = (...args: unknown[]) => {
      counts[name] = (counts[name] ?? 0) + 1;
      return (method as (...args: unknown[]) => unknown)(...args);
    };
  }
  return wrapped as S;
}

/** Asserts that an admission was allowed (naming it when not) and narrows its type. */
export function allowed(admission: Admission): Admission & { allowed: true } {
  assert.equal(admission.allowed, true, JSON.stringify(admission));
  return admission as Admission & { allowed: true };
}
