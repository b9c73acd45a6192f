/**
 * The container's cgroup v2 limits (`cpu.max`, `memory.max`), read once at start-up.
 *
 * @module
 */

/** Limits found in the cgroup filesystem; null where a file is absent or says `max`. */
export interface CgroupLimits {
  /** CPU quota in cores (`quota / period` of `cpu.max`), e.g. 1.5. */
  cpuLimitCores: number | null;
  /** Memory limit in bytes (`memory.max`). */
  memoryLimitBytes: number | null;
}

/** Where cgroup v2 is mounted on Linux. */
export const DEFAULT_CGROUP_ROOT = "/sys/fs/cgroup";

/**
 * `"150000 100000\n"` -> 1.5 cores; `"max 100000"` (no quota) or garbage -> null.
 *
 * @example
 * ```ts
 * parseCpuMax("50000 100000"); // 0.5
 * ```
 */
export function parseCpuMax(text: string): number | null {
  const [quota, period = "100000"] = text.trim().split(/\s+/);
  if (quota === undefined || quota === "max") return null;
  const quotaUs = Number(quota);
  const periodUs = Number(period);
  if (!Number.isFinite(quotaUs) || !Number.isFinite(periodUs) || quotaUs <= 0 || periodUs <= 0) {
    return null;
  }
  return quotaUs / periodUs;
}

/** `"536870912\n"` -> 536870912; `"max"` (unlimited) or garbage -> null. */
export function parseMemoryMax(text: string): number | null {
  const trimmed = text.trim();
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
 * Reads `cpu.max` and `memory.max` under `root`. Synchronous on purpose: it runs once at
 * start-up, and two tiny reads are cheaper than an await in the constructor path.
 */
export function readCgroupLimits(root: string = DEFAULT_CGROUP_ROOT): CgroupLimits {
  const cpu = readOptional(`${root}/cpu.max`);
  const memory = readOptional(`${root}/memory.max`);
  return {
    cpuLimitCores: cpu === null ? null : parseCpuMax(cpu),
    memoryLimitBytes: memory === null ? null : parseMemoryMax(memory),
  };
}
