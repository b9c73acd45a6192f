/**
 * How many workers `"workers": "auto"` means on this host.
 *
 * @module
 */

/**
 * Resolves the `workers` setting: a number stays; `"auto"` is the cgroup's CPU quota rounded
 * down (at least 1), as Go's automaxprocs sets GOMAXPROCS from it, else the core count. A
 * quota of 1.5 cores gets 1 worker: a second one would be throttled by the quota, not served.
 *
 * @example
 * ```ts
 * resolveWorkerCount("auto", { cpuCores: 2.5 }, 16); // 2
 * resolveWorkerCount("auto", { cpuCores: null }, 16); // 16
 * resolveWorkerCount(3, { cpuCores: 1 }, 16); // 3
 * ```
 */
export function resolveWorkerCount(
  setting: "auto" | number,
  cgroup: { cpuCores: number | null },
  cores: number = navigator.hardwareConcurrency,
): number {
  if (setting !== "auto") return setting;
  const byCores = Math.max(1, Math.floor(cores || 1));
  if (cgroup.cpuCores === null) return byCores;
  return Math.max(1, Math.min(byCores, Math.floor(cgroup.cpuCores)));
}
