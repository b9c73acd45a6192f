/**
 * What every part of the bench run shares: where things are, the knobs from the environment,
 * the run's clock and its log.
 *
 * @module
 */

/** The repository root (with a trailing slash). */
export const ROOT: string = new URL("../../", import.meta.url).pathname;
/** Raw JSON, logs and the Node peer live here (git-ignored). */
export const RESULTS_DIR = `${ROOT}bench/results`;
/** wrk seconds per run (`BENCH_DURATION_S`, default 4). */
export const DURATION_S = Number(Deno.env.get("BENCH_DURATION_S") ?? 4);
/** Repetitions of every measurement (`BENCH_REPS`, default 3); medians are reported. */
export const REPS = Number(Deno.env.get("BENCH_REPS") ?? 3);
/** wrk connection counts of the throughput runs. */
export const CONNECTIONS: readonly number[] = [32, 128];
/**
 * Longest wait for a quiet machine before a throughput run (`BENCH_QUIET_WAIT_MS`, default
 * 8000). On a machine that is never quiet (shared with other work) a shorter wait only saves
 * time: the foreign CPU column still says how busy it was.
 */
export const QUIET_WAIT_MS = Number(Deno.env.get("BENCH_QUIET_WAIT_MS") ?? 8000);
/**
 * A throughput run during which other processes used more than this share of the machine is
 * repeated once (`BENCH_FOREIGN_REPEAT`, default 0.15; 1 never repeats).
 */
export const FOREIGN_REPEAT_SHARE = Number(Deno.env.get("BENCH_FOREIGN_REPEAT") ?? 0.15);
/** When this run started (epoch ms), for the log and the report's run time. */
export const startedAt = Date.now();

/** Decodes command output. */
export const decoder = new TextDecoder();

/** A progress line on stderr, with the seconds since the run started. */
export function log(message: string): void {
  const seconds = ((Date.now() - startedAt) / 1000).toFixed(0).padStart(4);
  console.error(`[bench ${seconds}s] ${message}`);
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The median of the finite values, NaN when there are none. */
export function median(all: number[]): number {
  const values = all.filter(Number.isFinite);
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}
