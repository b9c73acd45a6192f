/**
 * Which cores each side of a measurement runs on. On a small machine the proxy under test,
 * wrk and the upstream otherwise share every core, and the scheduler moving them between cores
 * (and preempting the proxy for wrk) made the same build read anywhere from 77 to 170 us of CPU
 * per request from one run to the next. Pinned, the proxy under test has cores of its own, as
 * it would in production, and wrk and the upstreams share the others:
 *
 * - load side (wrk, the upstreams, the OTLP sink): the first half of the allowed cores;
 * - proxy side (every single-threaded proxy: nginx's one worker, HAProxy's one thread, the bare
 *   proxy, Fastify, Breakwater with one worker): the second half.
 *
 * Rows that compare workers (several threads) run on every core, unpinned, against a one-worker
 * row that is also unpinned, so the ratio compares like with like.
 *
 * `BENCH_PIN=0` turns pinning off (everything on every core, the method before 2026-11-30); it is
 * also off with fewer than two allowed cores or without `taskset` (util-linux).
 *
 * @module
 */

/** The two sets as `taskset -c` lists. */
export interface CpuSets {
  /** wrk, upstreams, receivers. */
  load: string;
  /** The proxy under test. */
  proxy: string;
}

/** Parses a Linux CPU list (`0-3,8,10-11`) into core numbers. */
export function parseCpuList(list: string): number[] {
  const cores: number[] = [];
  for (const part of list.trim().split(",")) {
    if (part === "") continue;
    const [from, to] = part.split("-").map(Number);
    if (!Number.isInteger(from) || (to !== undefined && !Number.isInteger(to))) {
      throw new Error(`not a CPU list: ${JSON.stringify(list)}`);
    }
    for (let core = from; core <= (to ?? from); core++) cores.push(core);
  }
  return cores;
}

/** Splits `cores` into a load half (first) and a proxy half (the rest); null under two cores. */
export function splitCores(cores: number[]): CpuSets | null {
  if (cores.length < 2) return null;
  const loadCount = Math.floor(cores.length / 2);
  return {
    load: cores.slice(0, loadCount).join(","),
    proxy: cores.slice(loadCount).join(","),
  };
}

function allowedCores(): number[] {
  try {
    const status = Deno.readTextFileSync("/proc/self/status");
    const list = status.match(/^Cpus_allowed_list:\s*(\S+)/m)?.[1];
    return list ? parseCpuList(list) : [];
  } catch {
    return [];
  }
}

function hasTaskset(): boolean {
  try {
    return new Deno.Command("taskset", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** This run's sets, or null when pinning is off (see the module doc). */
export const CPU_SETS: CpuSets | null = Deno.env.get("BENCH_PIN") === "0" || !hasTaskset()
  ? null
  : splitCores(allowedCores());

/** `args` prefixed to run on `cpus` (`taskset -c`), or unchanged when `cpus` is null. */
export function pinned(cpus: string | null, args: string[]): string[] {
  return cpus === null ? args : ["taskset", "-c", cpus, ...args];
}

/** The load side's cores, or null when unpinned. */
export const loadCpus = (): string | null => CPU_SETS?.load ?? null;
/** The proxy side's cores, or null when unpinned. */
export const proxyCpus = (): string | null => CPU_SETS?.proxy ?? null;

/** One line for the report saying how the run was pinned. */
export function pinningNote(): string {
  return CPU_SETS === null
    ? "unpinned: the proxy, wrk and the upstream share every core"
    : `pinned with taskset: the proxy under test on CPU ${CPU_SETS.proxy}, wrk and the upstream on CPU ${CPU_SETS.load}; the workers rows (1 and 2 workers) on every core`;
}
