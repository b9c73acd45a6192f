/**
 * Merges the Prometheus text of the main thread and of every worker into one exposition for
 * the instance (a scraper must see one set of series per instance, not one per thread).
 *
 * Families the request path records (requests, latencies, retries, pools, ejections, the
 * event-loop delay) are summed over the workers, series by series; histogram buckets, sums and
 * counts add up like counters; pool usage, a ratio, is the summed in-flight over the summed
 * limit. Everything else describes the instance as a whole (the breaker,
 * KV, the process, build info, upstream availability from the main thread's health checks) and
 * is taken from the main thread alone, since each worker would repeat the same value. A restarted
 * worker's counters are carried on from its slot's earlier incarnations (`restart_offsets.ts`),
 * so the instance's sums never drop when a worker restarts.
 *
 * @module
 */
import { createRestartOffsets, type WorkerExposition } from "./restart_offsets.ts";

/**
 * Families summed over the workers (Prometheus names, after the OpenTelemetry translation).
 * The main thread's own copies of them describe no traffic (it serves none) and are left out.
 */
export const WORKER_FAMILY =
  /^(http_(server|client)_request_duration|breakwater_(requests_rejected|retries|pool_|upstream_ejections|event_loop_delay|fallback))/;

/** One metric family of an exposition. */
export interface Family {
  name: string;
  /** `# HELP` and `# TYPE` lines as written. */
  comments: string[];
  /** Series key (`name{labels}`) -> value, in first-seen order. */
  samples: Map<string, number>;
}

/** Parses an exposition into families, in order. Unparseable lines are dropped. */
export function parseExposition(text: string): Family[] {
  const families: Family[] = [];
  const byName = new Map<string, Family>();
  let current: Family | null = null;
  const familyFor = (name: string): Family => {
    let family = byName.get(name);
    if (family === undefined) {
      family = { name, comments: [], samples: new Map() };
      byName.set(name, family);
      families.push(family);
    }
    return family;
  };
  for (const line of text.split("\n")) {
    if (line === "") continue;
    if (line.startsWith("#")) {
      const match = /^# (HELP|TYPE) (\S+)/.exec(line);
      if (match === null) continue;
      current = familyFor(match[2]);
      current.comments.push(line);
      continue;
    }
    // `name{labels} value [timestamp]`: label values may hold spaces, so split after `}`.
    const close = line.lastIndexOf("}");
    const rest = close >= 0 ? line.slice(close + 1).trim() : line.slice(line.indexOf(" ") + 1);
    const key = close >= 0 ? line.slice(0, close + 1) : line.slice(0, line.indexOf(" "));
    const value = Number(rest.split(" ")[0]);
    if (key === "" || Number.isNaN(value) && rest.split(" ")[0] !== "NaN") continue;
    const sampleName = key.replace(/\{.*$/, "");
    const family = current !== null && sampleName.startsWith(current.name)
      ? current
      : familyFor(sampleName);
    family.samples.set(key, value);
  }
  return families;
}

function render(families: Family[]): string {
  const lines: string[] = [];
  for (const family of families) {
    lines.push(...family.comments);
    for (const [key, value] of family.samples) lines.push(`${key} ${formatValue(value)}`);
  }
  return lines.join("\n") + "\n";
}

function formatValue(value: number): string {
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

/**
 * One exposition for the instance from the main thread's and the workers' texts, as they are
 * (no restart offsets: {@link createExpositionMerger} keeps those across scrapes).
 *
 * @example
 * ```ts
 * mergeExpositions(mainText, [worker0Text, worker1Text]);
 * // breakwater_requests_total{service="users",...} is worker0's + worker1's;
 * // breakwater_breaker_state{service="users"} is the main thread's.
 * ```
 */
export function mergeExpositions(mainText: string, workerTexts: string[]): string {
  return mergeFamilies(mainText, workerTexts.map(parseExposition));
}

/**
 * The merge of an instance's `/metrics`, kept for its life: each worker's counter series are
 * carried over its restarts (a restarted worker starts counting from zero again), so the summed
 * counters never go backwards; gauges are summed as the workers report them now.
 *
 * @example
 * ```ts
 * const merge = createExpositionMerger();
 * merge(mainText, [{ slot: 0, incarnation: 0, text: w0 }, { slot: 1, incarnation: 0, text: w1 }]);
 * // worker 0 crashed and restarted: its new counters are added to what the first one counted.
 * merge(mainText, [{ slot: 0, incarnation: 1, text: w0b }, { slot: 1, incarnation: 0, text: w1 }]);
 * ```
 */
export function createExpositionMerger(): (
  mainText: string,
  workers: readonly WorkerExposition[],
) => string {
  const offsets = createRestartOffsets();
  return (mainText, workers) =>
    mergeFamilies(
      mainText,
      workers.map((worker) =>
        offsets.adjust(worker.slot, worker.incarnation, parseExposition(worker.text))
      ),
    );
}

function mergeFamilies(mainText: string, workerFamilies: Family[][]): string {
  const merged = parseExposition(mainText);
  const byName = new Map(merged.map((family) => [family.name, family]));
  const summed = new Set<string>();
  for (const families of workerFamilies) {
    for (const family of families) {
      if (!WORKER_FAMILY.test(family.name)) continue;
      let target = byName.get(family.name);
      if (target === undefined) {
        target = { name: family.name, comments: family.comments, samples: new Map() };
        byName.set(family.name, target);
        merged.push(target);
      }
      if (!summed.has(family.name)) {
        summed.add(family.name);
        target.samples = new Map(); // the main thread's copy serves no traffic
      }
      for (const [key, value] of family.samples) {
        target.samples.set(key, (target.samples.get(key) ?? 0) + value);
      }
    }
  }
  if (summed.has(POOL_USAGE)) poolUsageOfInstance(byName);
  return render(merged);
}

const POOL_USAGE = "breakwater_pool_usage_ratio";
const POOL_ACTIVE = "breakwater_pool_active";
const POOL_LIMIT = "breakwater_pool_limit";

/**
 * A ratio does not add up over the workers (two full workers are a full instance, not 2): the
 * instance's pool usage is its summed in-flight over its summed limit, what each worker's gauge
 * is for its own share (`breakwater.pool.usage`, active / limit). A series without both parts
 * or with no limit is left out, as a worker's gauge observes nothing for a zero limit.
 */
function poolUsageOfInstance(byName: Map<string, Family>): void {
  const usage = byName.get(POOL_USAGE)!;
  const active = byName.get(POOL_ACTIVE)?.samples;
  const limit = byName.get(POOL_LIMIT)?.samples;
  const samples = new Map<string, number>();
  for (const key of usage.samples.keys()) {
    const labels = key.slice(POOL_USAGE.length);
    const inFlight = active?.get(POOL_ACTIVE + labels);
    const max = limit?.get(POOL_LIMIT + labels);
    if (inFlight !== undefined && max !== undefined && max > 0) samples.set(key, inFlight / max);
  }
  usage.samples = samples;
}
