/**
 * What a config reload changes: which services were added, removed or changed, and which
 * top-level settings cannot be applied to a running process (the listeners, KV, telemetry), so
 * the running values are kept for them, as nginx keeps its listening sockets across `-s reload`.
 * Pure, so each rule is a unit test.
 *
 * @module
 */
import type { GatewayConfig } from "../config/schema.ts";

/** Top-level keys that only take effect at start-up. */
export const RESTART_ONLY_KEYS = ["listen", "workers", "admin", "kv", "telemetry"] as const;

/** `limits` keys the listeners were started with (their servers read them once). */
export const LISTENER_LIMIT_KEYS = [
  "headerTimeoutMs",
  "idleTimeoutMs",
  "bodyIdleTimeoutMs",
  "maxClientConnections",
] as const;

/** What a reload changes, for the log and `POST /admin/reload`. */
export interface ReloadPlan {
  /** Services new in the next config, in its order. */
  added: string[];
  /** Services the next config no longer has. */
  removed: string[];
  /** Services in both whose settings differ (they get a new runtime). */
  changed: string[];
  /** Services in both with identical settings (their runtime and pools carry over). */
  unchanged: string[];
  /** Restart-only keys that differ; the running values are kept. */
  ignored: string[];
  /** The config to apply: the next one with the running values of {@link ignored} keys. */
  config: GatewayConfig;
}

/**
 * Compares the running config with the next one.
 *
 * @example
 * ```ts
 * const plan = planReload(running, next);
 * plan.added; // ["billing"]
 * plan.ignored; // ["listen"]: still listening where it did
 * ```
 */
export function planReload(running: GatewayConfig, next: GatewayConfig): ReloadPlan {
  const ignored: string[] = RESTART_ONLY_KEYS.filter((key) => !sameValue(running[key], next[key]));
  const config: GatewayConfig = { ...next, limits: { ...next.limits } };
  for (const key of RESTART_ONLY_KEYS) {
    (config as unknown as Record<string, unknown>)[key] = running[key];
  }
  for (const key of LISTENER_LIMIT_KEYS) {
    if (running.limits[key] !== next.limits[key]) ignored.push(`limits.${key}`);
    (config.limits as Record<string, unknown>)[key] = running.limits[key];
  }
  const before = running.services;
  const after = next.services;
  const names = Object.keys(after);
  const kept = names.filter((name) => name in before);
  return {
    added: names.filter((name) => !(name in before)),
    removed: Object.keys(before).filter((name) => !(name in after)),
    changed: kept.filter((name) => !sameValue(before[name], after[name])),
    unchanged: kept.filter((name) => sameValue(before[name], after[name])),
    ignored,
    config,
  };
}

/** Deep equality of two parsed config values (plain JSON data and status ranges). */
export function sameValue(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
