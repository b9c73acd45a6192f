/**
 * Container awareness: the cgroup v2 CPU and memory limits of this process, when it has any.
 *
 * @module
 */

/** The limits a container runtime set, or null where none is set (or no cgroup v2 exists). */
export interface CgroupLimits {
  /** CPU quota in cores (`cpu.max` quota / period), or null for no limit. */
  cpuCores: number | null;
  /** `memory.max` in bytes, or null for no limit. */
  memoryBytes: number | null;
}

/** Parses `cpu.max` (`"max 100000"` or `"150000 100000"`) into cores. */
export function parseCpuMax(text: string): number | null {
  const [quota, period] = text.trim().split(/\s+/);
  if (quota === undefined || quota === "max") return null;
  const quotaUs = Number(quota);
  const periodUs = Number(period ?? "100000");
  if (!Number.isFinite(quotaUs) || !Number.isFinite(periodUs) || periodUs <= 0) return null;
  return quotaUs / periodUs;
}

/** Parses `memory.max` (`"max"` or a byte count). */
export function parseMemoryMax(text: string): number | null {
  const trimmed = text.trim();
  if (trimmed === "max" || trimmed === "") return null;
  const bytes = Number(trimmed);
  return Number.isFinite(bytes) && bytes > 0 ? bytes : null;
}

/**
 * Reads the limits from `root` (default `/sys/fs/cgroup`). Missing files or no permission
 * mean "no limit"; this never throws.
 */
export function readCgroupLimits(root = "/sys/fs/cgroup"): CgroupLimits {
  const read = (name: string): string | null => {
    try {
      return Deno.readTextFileSync(`${root}/${name}`);
    } catch {
      return null;
    }
  };
  const cpu = read("cpu.max");
  const memory = read("memory.max");
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
