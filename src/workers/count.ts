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

/** How many threads serve the public port, and why when it is fewer than the setting asks. */
export interface Threads {
  /** Workers to run; 1 is the single-threaded gateway. */
  count: number;
  /** What the setting resolved to ({@link resolveWorkerCount}): above `count` with TLS. */
  asked: number;
  /**
   * Set when the setting resolved to more than one but one thread runs: `"asked"` for a number
   * the config gave (worth a warning: the user asked for workers), `"auto"` for the default
   * (the user asked for nothing; worth an info line at most).
   */
  singleBecauseOfTls: "asked" | "auto" | null;
}

/**
 * The threads an instance runs for `setting` (as {@link resolveWorkerCount}), given whether
 * `listen.tls` is configured: the TLS listener runs on the main thread alone (README, "TLS and
 * HTTP/2"), so a TLS config runs one thread whatever the setting.
 *
 * @example
 * ```ts
 * threadsFor("auto", false, { cpuCores: null }, 4); // count 4, asked 4, singleBecauseOfTls null
 * threadsFor("auto", true, { cpuCores: null }, 4); // count 1, asked 4, singleBecauseOfTls "auto"
 * threadsFor(2, true, { cpuCores: null }, 4); // count 1, asked 2, singleBecauseOfTls "asked"
 * ```
 */
export function threadsFor(
  setting: "auto" | number,
  tls: boolean,
  cgroup: { cpuCores: number | null },
  cores: number = navigator.hardwareConcurrency,
): Threads {
  const asked = resolveWorkerCount(setting, cgroup, cores);
  if (!tls || asked === 1) return { count: asked, asked, singleBecauseOfTls: null };
  return { count: 1, asked, singleBecauseOfTls: setting === "auto" ? "auto" : "asked" };
}
