/**
 * Container awareness: the cgroup v2 CPU and memory limits of this process, when it has any.
 *
 * The one reader of `cpu.max` and `memory.max` (see the kernel's cgroup v2 documentation,
 * Documentation/admin-guide/cgroup-v2.rst). The configuration caps its defaults with what it
 * finds ({@link inFlightCapFor}, README "Container awareness"), and telemetry reports the same
 * numbers as `breakwater.cgroup.*` gauges, so the two can never disagree about the limits.
 *
 * @module
 */

/** The limits a container runtime set, or null where none is set (or no cgroup v2 exists). */
export interface CgroupLimits {
  /** CPU quota in cores (`cpu.max` quota / period), e.g. 1.5; null for no limit. */
  cpuCores: number | null;
  /** `memory.max` in bytes; null for no limit. */
  memoryBytes: number | null;
}

/** Where cgroup v2 is mounted on Linux. */
export const DEFAULT_CGROUP_ROOT = "/sys/fs/cgroup";

/**
 * Parses `cpu.max` into cores: `"150000 100000\n"` -> 1.5. `"max 100000"` (no quota), a quota
 * or period that is not a positive number, or garbage -> null. The period defaults to the
 * kernel's 100000 us when the file holds the quota alone.
 *
 * @example
 * ```ts
 * parseCpuMax("50000 100000"); // 0.5
 * parseCpuMax("max 100000"); // null
 * ```
 */
export function parseCpuMax(text: string): number | null {
  const [quota, period = "100000"] = text.trim().split(/\s+/);
  if (quota === undefined || quota === "max") return null;
  const quotaUs = Number(quota);
  const periodUs = Number(period);
  // The kernel never reports a quota of 0 or below; a file that does is not a limit we can use.
  if (!Number.isFinite(quotaUs) || !Number.isFinite(periodUs) || quotaUs <= 0 || periodUs <= 0) {
    return null;
  }
  return quotaUs / periodUs;
}

/**
 * Parses `memory.max` into bytes: `"536870912\n"` -> 536870912. `"max"` (unlimited), anything
 * but a positive decimal integer, or garbage -> null.
 *
 * @example
 * ```ts
 * parseMemoryMax("268435456\n"); // 268435456
 * parseMemoryMax("max"); // null
 * ```
 */
export function parseMemoryMax(text: string): number | null {
  const trimmed = text.trim();
  // The kernel writes a plain decimal byte count; "1e9" or "-1" are not from it.
  if (trimmed === "max" || !/^\d+$/.test(trimmed)) return null;
  const bytes = Number(trimmed);
  return Number.isSafeInteger(bytes) && bytes > 0 ? bytes : null;
}

function readOptional(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    // Absent (cgroup v1, macOS, Deno Deploy) or not permitted: no limit to report.
    return null;
  }
}

/**
 * Reads `cpu.max` and `memory.max` under `root` (default `/sys/fs/cgroup`). Missing files or no
 * permission mean "no limit"; this never throws. Synchronous on purpose: it runs at start-up,
 * and two tiny reads are cheaper than an await in the start-up path.
 *
 * @example
 * ```ts
 * const { cpuCores, memoryBytes } = readCgroupLimits(); // { cpuCores: 2, memoryBytes: null }
 * ```
 */
export function readCgroupLimits(root: string = DEFAULT_CGROUP_ROOT): CgroupLimits {
  const cpu = readOptional(`${root}/cpu.max`);
  const memory = readOptional(`${root}/memory.max`);
  return {
    cpuCores: cpu === null ? null : parseCpuMax(cpu),
    memoryBytes: memory === null ? null : parseMemoryMax(memory),
  };
}

/** Each in-flight request may need about this much memory (buffers, TLS, bookkeeping). */
const BYTES_PER_IN_FLIGHT_REQUEST = 1024 * 1024;
/** In-flight requests one core of CPU quota is given by default. */
const IN_FLIGHT_PER_CORE = 100;
/** The floor below which caps are not pushed, so a tiny container still serves. */
const MIN_IN_FLIGHT = 10;

/**
 * The gateway-wide in-flight cap that the limits allow: 100 per core of CPU quota and one per
 * MiB of memory limit, never below 10. Null when no limit is set.
 */
export function inFlightCapFor(limits: CgroupLimits): number | null {
  const caps: number[] = [];
  if (limits.cpuCores !== null) caps.push(Math.floor(limits.cpuCores * IN_FLIGHT_PER_CORE));
  if (limits.memoryBytes !== null) {
    caps.push(Math.floor(limits.memoryBytes / BYTES_PER_IN_FLIGHT_REQUEST));
  }
  if (caps.length === 0) return null;
  return Math.max(MIN_IN_FLIGHT, Math.min(...caps));
}
