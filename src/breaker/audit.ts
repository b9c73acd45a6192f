/**
 * The breaker's audit timeline: every operator action (`force`) and every fleet transition
 * (trip, probe, reopen, close), with when, which instance made it and, for operator actions,
 * who asked (a caller label such as the admin API's user). An incident view reads it as
 * "gw-3 tripped users at 12:01:07, gw-7 probed at 12:01:37, admin forced it closed at 12:02".
 *
 * Entries are written by the instance that made the change, in the same atomic commit as the
 * change itself (so the timeline never shows a transition that did not happen, nor misses one
 * that did), under two keys with one value:
 *
 * | key | for |
 * | --- | --- |
 * | `["breakwater", "audit", "all", atMs, id]` | the whole fleet, newest first |
 * | `["breakwater", "audit", "service", service, atMs, id]` | one service, newest first |
 *
 * Both expire after `retentionMs` (`expireIn`), so the timeline is bounded by time; labels are
 * cut to {@link MAX_LABEL_LENGTH} characters, and a read returns at most {@link MAX_AUDIT_READ}
 * entries. Deno KV's expiry is lazy, so a read also drops entries older than the retention
 * itself.
 *
 * @module
 */
import type { BreakerRecord, ForceAction } from "./policy.ts";
import type { BreakerState } from "./types.ts";

/** What happened. `probe`: an instance won a probe slot and sends the half-open trial. */
export type AuditKind =
  | "trip"
  | "probe"
  | "reopen"
  | "close"
  | "force_open"
  | "force_close"
  | "reset";

/** One entry of the timeline. */
export interface AuditEntry {
  /** When the change was made (epoch ms, the maker's clock). */
  atMs: number;
  /** The service. */
  service: string;
  /** What happened. */
  kind: AuditKind;
  /** The instance that made the change. */
  instanceId: string;
  /** Who asked, for operator actions (`force`); null for the breaker's own transitions. */
  by: string | null;
  /** The state before (as stored: `open` also while half-open). */
  from: BreakerState;
  /** The state after. */
  to: BreakerState;
  /** The breaker generation after the change. */
  generation: number;
  /**
   * For a `trip`: the fleet's failures in the window that reached the threshold, as the
   * tripping instance counted them (the count starts from zero once the breaker opens).
   */
  failures?: number;
  /**
   * True when the entry is in KV for the whole fleet; false when KV was unavailable and the
   * change applied to this instance only (it is then only logged, through `onAudit`).
   */
  fleet: boolean;
}

/** Default retention of audit entries: 7 days. */
export const DEFAULT_AUDIT_RETENTION_MS = 7 * 24 * 3600 * 1000;
/** Caller labels longer than this are cut (an entry must stay small). */
export const MAX_LABEL_LENGTH = 64;
/** The most entries one read returns. */
export const MAX_AUDIT_READ = 1000;
/** The entries a read returns when it names no limit. */
export const DEFAULT_AUDIT_READ = 100;
/** The label of a force without one. */
export const DEFAULT_FORCE_LABEL = "admin";

const FORCE_KINDS: Record<ForceAction, AuditKind> = {
  open: "force_open",
  close: "force_close",
  reset: "reset",
};

/** The audit kind of an operator action. */
export function forceKind(action: ForceAction): AuditKind {
  return FORCE_KINDS[action];
}

/** A caller label as stored: trimmed, control characters dropped, cut, never empty. */
export function cleanLabel(label: string | undefined): string {
  // deno-lint-ignore no-control-regex
  const cleaned = (label ?? "").replace(/[\u0000-\u001f\u007f]/g, "").trim();
  return cleaned === "" ? DEFAULT_FORCE_LABEL : cleaned.slice(0, MAX_LABEL_LENGTH);
}

/**
 * What a committed transition from `from` to `to` was, or null when it is not one the
 * timeline shows. A force is named by the caller, so it is not derived here.
 */
export function transitionKind(from: BreakerRecord, to: BreakerRecord): AuditKind | null {
  if (from.state === "closed" && to.state === "open") return "trip";
  if (from.state === "open" && to.state === "open") return "reopen";
  if (from.state === "open" && to.state === "closed") return "close";
  return null;
}

/** The fleet-wide key of an entry. */
export function auditKey(entry: AuditEntry, id: string): Deno.KvKey {
  return ["breakwater", "audit", "all", entry.atMs, id];
}

/** The per-service key of an entry. */
export function serviceAuditKey(entry: AuditEntry, id: string): Deno.KvKey {
  return ["breakwater", "audit", "service", entry.service, entry.atMs, id];
}

/** The prefix a read lists, newest first. */
export function auditPrefix(service?: string): Deno.KvKey {
  return service === undefined
    ? ["breakwater", "audit", "all"]
    : ["breakwater", "audit", "service", service];
}

const KINDS: readonly unknown[] = [
  "trip",
  "probe",
  "reopen",
  "close",
  "force_open",
  "force_close",
  "reset",
];
const STATES: readonly unknown[] = ["closed", "open", "half_open", "forced_open", "forced_closed"];

/** Checks a value read from KV (another version may have written something else); null if not an entry. */
export function parseAuditEntry(value: unknown): AuditEntry | null {
  if (typeof value !== "object" || value === null) return null;
  const entry = value as Record<string, unknown>;
  if (
    !Number.isFinite(entry.atMs) || typeof entry.service !== "string" ||
    !KINDS.includes(entry.kind) || typeof entry.instanceId !== "string" ||
    !(entry.by === null || typeof entry.by === "string") || !STATES.includes(entry.from) ||
    !STATES.includes(entry.to) || !Number.isSafeInteger(entry.generation)
  ) return null;
  const parsed: AuditEntry = {
    atMs: entry.atMs as number,
    service: entry.service,
    kind: entry.kind as AuditKind,
    instanceId: entry.instanceId,
    by: entry.by as string | null,
    from: entry.from as BreakerState,
    to: entry.to as BreakerState,
    generation: entry.generation as number,
    fleet: true,
  };
  if (Number.isSafeInteger(entry.failures)) parsed.failures = entry.failures as number;
  return parsed;
}

/** A read's `limit`: a whole number in 1..{@link MAX_AUDIT_READ}, default {@link DEFAULT_AUDIT_READ}. */
export function clampLimit(limit: number | undefined): number {
  if (limit === undefined || !Number.isFinite(limit)) return DEFAULT_AUDIT_READ;
  return Math.min(MAX_AUDIT_READ, Math.max(1, Math.floor(limit)));
}

/**
 * A bounded in-memory timeline of the entries this instance made: what `audit()` answers while
 * KV is unavailable, newest first.
 */
export interface LocalAudit {
  /** Entries, oldest first. */
  entries: AuditEntry[];
  /** How many are kept. */
  readonly capacity: number;
}

/** An empty {@link LocalAudit}. */
export function createLocalAudit(capacity = 200): LocalAudit {
  return { entries: [], capacity };
}

/** Keeps `entry`, dropping the oldest beyond the capacity. */
export function rememberAudit(local: LocalAudit, entry: AuditEntry): void {
  local.entries.push(entry);
  if (local.entries.length > local.capacity) local.entries.shift();
}

/** The newest `limit` entries (of `service`, when given), newest first. */
export function recentAudit(
  local: LocalAudit,
  service: string | undefined,
  limit: number,
): AuditEntry[] {
  const out: AuditEntry[] = [];
  for (let index = local.entries.length - 1; index >= 0 && out.length < limit; index--) {
    const entry = local.entries[index];
    if (service === undefined || entry.service === service) out.push(entry);
  }
  return out;
}
