/**
 * Keeps a worker slot's counters counting across a restart of its worker. A restarted worker is
 * a new thread with a new MeterProvider, so its counters start again from zero; summed as they
 * are, the instance's counters would drop and Prometheus would read a counter reset (`rate()`
 * and `increase()` jump). Per slot, each counter series carries an offset: the last value seen
 * from the slot's earlier incarnations, added to what the current one reports, so the series
 * never decreases (what a counter promises: the Prometheus exposition format, "Counter"; the
 * OpenTelemetry data model, "Sums", cumulative and monotonic).
 *
 * Counter series are the samples of a family typed `counter`, and a `histogram`'s or
 * `summary`'s `_bucket`, `_sum` and `_count` (cumulative since the start). Gauges (pool usage,
 * breaker state, a summary's quantiles, untyped samples) describe the worker now and get no
 * offset. What an incarnation counted after the last scrape that reached it is not seen by
 * anyone and stays lost; the sum is then a little low, never lower than before.
 *
 * @module
 */
import type { Family } from "./metrics_merge.ts";

/** A worker's exposition, with the slot it runs in and which start of that slot it is. */
export interface WorkerExposition {
  /** The worker's index (its slot: a restarted worker takes the crashed one's). */
  slot: number;
  /** Which start of the slot answered (0 first, 1 after one restart...); only grows. */
  incarnation: number;
  /** Its Prometheus text. */
  text: string;
}

/** The Prometheus type a family's `# TYPE` line declares (`untyped` without one). */
export function familyType(family: Family): string {
  for (const comment of family.comments) {
    const match = /^# TYPE \S+ (\S+)/.exec(comment);
    if (match !== null) return match[1];
  }
  return "untyped";
}

/** True for a sample of the family whose value only grows while one process reports it. */
export function isCounterSample(type: string, familyName: string, key: string): boolean {
  if (type === "counter") return true;
  if (type !== "histogram" && type !== "summary") return false;
  const name = key.replace(/\{.*$/, "");
  const suffix = name.slice(familyName.length);
  return suffix === "_sum" || suffix === "_count" || (type === "histogram" && suffix === "_bucket");
}

interface Carried {
  comments: string[];
  /** Series key -> the sum of earlier incarnations' last values. */
  offsets: Map<string, number>;
}

interface SlotState {
  incarnation: number;
  /** Family name -> series key -> the current incarnation's last reported value. */
  last: Map<string, Map<string, number>>;
  /** Family name -> what earlier incarnations counted. */
  carried: Map<string, Carried>;
}

/** Carries counters over worker restarts; one per instance, for all its slots. */
export interface RestartOffsets {
  /**
   * The worker's families with each counter series raised by its slot's offset (a series only
   * an earlier incarnation had is added with the offset alone), and the values remembered.
   */
  adjust(slot: number, incarnation: number, families: Family[]): Family[];
}

/**
 * Creates the per-slot counter offsets of an instance's workers.
 *
 * @example
 * ```ts
 * const offsets = createRestartOffsets();
 * offsets.adjust(0, 0, parseExposition(beforeCrash)); // requests_total 7
 * offsets.adjust(0, 1, parseExposition(afterRestart)); // requests_total 2 -> 9
 * ```
 */
export function createRestartOffsets(): RestartOffsets {
  const slots = new Map<number, SlotState>();
  return {
    adjust(slot, incarnation, families) {
      let state = slots.get(slot);
      if (state === undefined) {
        state = { incarnation, last: new Map(), carried: new Map() };
        slots.set(slot, state);
      }
      if (incarnation !== state.incarnation) {
        // A new start of the slot: what the previous one last reported is carried from now on.
        for (const [name, series] of state.last) {
          const carried = state.carried.get(name)!;
          for (const [key, value] of series) {
            carried.offsets.set(key, (carried.offsets.get(key) ?? 0) + value);
          }
        }
        state.last = new Map();
        state.incarnation = incarnation;
      }
      const seen = new Set<string>();
      const adjusted = families.map((family): Family => {
        const type = familyType(family);
        if (type !== "counter" && type !== "histogram" && type !== "summary") return family;
        seen.add(family.name);
        let carried = state.carried.get(family.name);
        if (carried === undefined) {
          carried = { comments: family.comments, offsets: new Map() };
          state.carried.set(family.name, carried);
        }
        const last = new Map<string, number>();
        state.last.set(family.name, last);
        const samples = new Map<string, number>();
        for (const [key, value] of family.samples) {
          if (!isCounterSample(type, family.name, key)) {
            samples.set(key, value);
            continue;
          }
          last.set(key, value);
          samples.set(key, value + (carried.offsets.get(key) ?? 0));
        }
        for (const [key, offset] of carried.offsets) {
          if (!samples.has(key)) samples.set(key, offset);
        }
        return { name: family.name, comments: family.comments, samples };
      });
      // Families the current incarnation has not reported yet (no request since its start).
      for (const [name, carried] of state.carried) {
        if (seen.has(name) || carried.offsets.size === 0) continue;
        adjusted.push({ name, comments: carried.comments, samples: new Map(carried.offsets) });
      }
      return adjusted;
    },
  };
}
