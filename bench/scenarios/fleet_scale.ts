/**
 * The fleet at size, measured with light instance processes (the breaker and the retry budget
 * in front of `fetch`: `tests/breaker/_fleet_scale_child.ts`) so ten of them fit on two cores
 * with the upstream and the KV server:
 *
 * 1. **Outage cost**: N = 1, 3, 10 instances at 50 req/s each, on one KV file and over the test
 *    KV Connect server (watch); the upstream goes dark; failed calls it receives before every
 *    instance rejects, and the trip's propagation (each instance's first rejection after the
 *    threshold-th failure). N = 10 also with the hold-back turned off, for comparison.
 * 2. **Retry storm**: ten instances at 10 req/s each in front of a dead upstream, two retries
 *    each as the budget allows, 10 s window: retries received per second with per-instance
 *    budgets against the fleet budget.
 *
 * Each outage is repeated `BENCH_REPS` times (default 3; median and max are reported). Run it
 * alone: `deno run -A bench/scenarios/fleet_scale.ts` (prints the tables), or as the
 * `fleet_scale` scenario of `bench/run.ts`.
 *
 * @module
 */
import {
  type FleetKv,
  measureOutage,
  measureRetryStorm,
  type OutageResult,
} from "../../tests/breaker/_fleet_scale.ts";
import type { BenchContext, Scenario } from "../lib/scenario.ts";
import { log, median, REPS } from "../lib/settings.ts";

const THRESHOLD = 5;
const RATE_PER_S = 50;

/** One outage configuration over its repetitions. */
export interface OutageRow {
  /** Where the instances share KV. */
  kv: FleetKv;
  /** Instances under load. */
  instances: number;
  /** The breaker's hold-back. */
  holdBack: boolean;
  /** Calls in flight per instance at most. */
  maxInFlight: number;
  /** Failed calls per repetition. */
  failedCalls: number[];
  /** Per repetition: the slowest instance's first rejection after the threshold-th failure. */
  maxLagMs: number[];
  /** Per repetition: every instance's lag, for the median. */
  lagsMs: number[][];
  /** Per repetition: every instance's first sight of the open breaker after the threshold-th failure. */
  openLagsMs: number[][];
  /** Instances that went degraded during a repetition (KV slower than its time limit). */
  degraded: number[];
}

/** The retry storm, one row per budget. */
export interface RetryRow {
  /** Per-instance budgets or the fleet budget. */
  budget: "local" | "fleet";
  /** First attempts per second received. */
  requestsPerS: number;
  /** Retries per second received. */
  retriesPerS: number;
}

/** Everything the scenario measured. */
export interface FleetScaleResults {
  /** Outage rows. */
  outages: OutageRow[];
  /** Retry storm rows. */
  retries: RetryRow[];
}

const PLAN: readonly { kv: FleetKv; instances: number; holdBack: boolean; maxInFlight: number }[] =
  [
    { kv: "file", instances: 1, holdBack: true, maxInFlight: 4 },
    { kv: "file", instances: 3, holdBack: true, maxInFlight: 4 },
    { kv: "file", instances: 10, holdBack: true, maxInFlight: 4 },
    { kv: "file", instances: 10, holdBack: true, maxInFlight: 1 },
    { kv: "file", instances: 10, holdBack: false, maxInFlight: 4 },
    { kv: "kv-connect", instances: 1, holdBack: true, maxInFlight: 4 },
    { kv: "kv-connect", instances: 3, holdBack: true, maxInFlight: 4 },
    { kv: "kv-connect", instances: 10, holdBack: true, maxInFlight: 4 },
    { kv: "kv-connect", instances: 10, holdBack: true, maxInFlight: 1 },
    { kv: "kv-connect", instances: 10, holdBack: false, maxInFlight: 4 },
  ];

function record(row: OutageRow, result: OutageResult): void {
  row.failedCalls.push(result.failedCalls);
  row.lagsMs.push(result.tripLagsMs);
  row.openLagsMs.push(result.openLagsMs);
  row.maxLagMs.push(Math.max(...result.tripLagsMs));
  row.degraded.push(result.reports.filter((report) => report.degradedAtMs !== null).length);
}

/** Runs every outage and the retry storm; `reps` repetitions of each outage. */
export async function measureFleetScale(reps: number): Promise<FleetScaleResults> {
  const outages: OutageRow[] = PLAN.map((each) => ({
    ...each,
    failedCalls: [],
    maxLagMs: [],
    lagsMs: [],
    openLagsMs: [],
    degraded: [],
  }));
  // Repetitions interleaved, so a burst of load on the machine spreads over every row.
  for (let rep = 0; rep < reps; rep++) {
    for (const row of outages) {
      const result = await measureOutage({
        instances: row.instances,
        ratePerS: RATE_PER_S,
        kv: row.kv,
        failureThreshold: THRESHOLD,
        holdBack: row.holdBack,
        maxInFlight: row.maxInFlight,
      });
      record(row, result);
      log(
        `fleet_scale ${row.kv} N=${row.instances}${row.holdBack ? "" : " (no hold-back)"} rep ${
          rep + 1
        }: ${result.failedCalls} failed calls, slowest instance ${
          Math.round(Math.max(...result.tripLagsMs))
        } ms after the threshold-th failure`,
      );
    }
  }
  const retries: RetryRow[] = [];
  for (const budget of ["local", "fleet"] as const) {
    const storm = await measureRetryStorm({
      instances: 10,
      ratePerS: 10,
      kv: "file",
      budget,
      runForMs: 16_000,
      measureFromMs: 10_000,
    });
    retries.push({ budget, requestsPerS: storm.requestsPerS, retriesPerS: storm.retriesPerS });
    log(`fleet_scale retry storm (${budget}): ${storm.retriesPerS.toFixed(1)} retries/s`);
  }
  return { outages, retries };
}

const round = (value: number) => Number.isFinite(value) ? String(Math.round(value)) : "-";

/** The results as markdown tables. */
export function fleetScaleReport(results: FleetScaleResults): string {
  const lines = [
    `Outage cost at ${RATE_PER_S} req/s per instance, threshold ${THRESHOLD} (median, max of ${
      results.outages[0]?.failedCalls.length ?? 0
    }; independent breakers: N x ${THRESHOLD}). Lags from the threshold-th failure at the upstream:`,
    "",
    "| KV | instances | in flight | hold-back | failed calls | max | stopped sending, median ms | slowest | saw it open, median ms | slowest | degraded |",
    "| --- | --: | --: | --- | --: | --: | --: | --: | --: | --: | --: |",
  ];
  for (const row of results.outages) {
    const opens = row.openLagsMs.flat();
    lines.push(
      `| ${row.kv} | ${row.instances} | ${row.maxInFlight} | ${row.holdBack ? "on" : "off"} | ${
        round(median(row.failedCalls))
      } | ${Math.max(...row.failedCalls)} | ${round(median(row.lagsMs.flat()))} | ${
        round(Math.max(...row.maxLagMs))
      } | ${round(median(opens))} | ${round(Math.max(...opens))} | ${
        row.degraded.reduce((sum, count) => sum + count, 0)
      } |`,
    );
  }
  lines.push(
    "",
    "Retry storm: 10 instances x 10 req/s, dead upstream, 2 retries, budget 20% + 3/s, 10 s window:",
    "",
    "| budget | first attempts/s | retries received/s |",
    "| --- | --: | --: |",
  );
  for (const row of results.retries) {
    lines.push(
      `| ${row.budget === "local" ? "per instance" : "fleet"} | ${row.requestsPerS.toFixed(0)} | ${
        row.retriesPerS.toFixed(1)
      } |`,
    );
  }
  return lines.join("\n");
}

async function run(context: BenchContext): Promise<void> {
  const results = await measureFleetScale(REPS);
  const tables = fleetScaleReport(results);
  // The driver's report has no table of its own for these rows (yet): they go in as notes,
  // and whole to the output, where the tables read as tables.
  console.log(`\nfleet_scale\n\n${tables}\n`);
  for (const line of tables.split("\n")) {
    if (line !== "") context.results.notes.push(`fleet_scale: ${line}`);
  }
}

/** The fleet-at-size scenario. */
export const fleetScale: Scenario = {
  name: "fleet_scale",
  title:
    "fleet at size: N = 1, 3, 10 light instances on a KV file and over KV Connect; retry storm",
  needs: [],
  run,
};

if (import.meta.main) {
  console.log(fleetScaleReport(await measureFleetScale(REPS)));
}
