/**
 * `deno task bench`: every Breakwater benchmark in one run, each figure as a ratio to a baseline
 * measured in the same run (the machine is noisy), written to `bench/RESULTS.md` and printed.
 *
 * The scenarios, in the order they run (`bench/scenarios/*.ts`):
 *
 * 1. `throughput`: wrk at 32 and 128 connections, then 1 MiB responses: direct upstream, nginx
 *    (keep-alive upstream, 1 worker), HAProxy (1 thread), a bare Hono + pooled fetch proxy,
 *    Breakwater (defaults with the access log off and on, fetch client, tracing on, 2 workers
 *    once supported), Fastify + @fastify/http-proxy on the machine's Node.
 * 2. `bodies`: 100 MiB down and up through Breakwater vs direct (MB/s), peak RSS growth.
 * 3. `profile`: `--cpu-prof` of Breakwater under wrk: where its CPU goes.
 * 4. `micro`: per-request costs, `deno bench --json` over the bench files.
 * 5. `fleet`: fleet outage cost, N = 1, 3, 10 gateways, one shared KV file vs `:memory:` each.
 * 6. `propagation`: an open breaker reaching the other processes sharing one KV file.
 * 7. `memory`: peak RSS of a gateway process per upstream client, 100 MiB chunked up and
 *    256 MiB down, cold and warm (nginx as the baseline).
 * 8. `tracing`: CPU per request and req/s with tracing off, on at 100% and sampled out.
 * 9. `https`: Breakwater terminating TLS vs nginx terminating TLS with the same certificate
 *    (wrk over TLS, http/1.1), each beside its plain HTTP figure.
 * 10. `websocket`: WebSocket echo round trips through Breakwater vs nginx vs direct (small
 *    messages, then 1 MiB ones), proxy CPU per round trip.
 *
 * Flags: `--only NAME[,NAME]` runs a subset (also `BENCH_ONLY`), `--dry-run` lists what would
 * run and starts nothing. Env knobs: BENCH_DURATION_S (wrk seconds per run, default 4),
 * BENCH_REPS (default 3), BENCH_OUT (markdown path). Every process it starts is stopped in a
 * finally block (and on SIGINT/SIGTERM).
 *
 * @example
 * ```sh
 * deno task bench -- --only micro
 * deno task bench -- --dry-run
 * ```
 *
 * @module
 */
import { ensureTools, stopAll } from "./lib/processes.ts";
import { machine, report } from "./lib/report.ts";
import { emptyResults, type Results } from "./lib/results.ts";
import { type Scenario, type Shared, sharedProcesses } from "./lib/scenario.ts";
import { log, RESULTS_DIR, ROOT, startedAt } from "./lib/settings.ts";
import { bodies } from "./scenarios/bodies.ts";
import { fleet } from "./scenarios/fleet.ts";
import { fleetScale } from "./scenarios/fleet_scale.ts";
import { https } from "./scenarios/https.ts";
import { memory } from "./scenarios/memory.ts";
import { micro } from "./scenarios/micro.ts";
import { profile } from "./scenarios/profile.ts";
import { propagation } from "./scenarios/propagation.ts";
import { throughput } from "./scenarios/throughput.ts";
import { tracing } from "./scenarios/tracing.ts";
import { websocket } from "./scenarios/websocket.ts";

/** Every scenario, in run order. */
export const SCENARIOS: readonly Scenario[] = [
  throughput,
  bodies,
  profile,
  micro,
  fleet,
  propagation,
  fleetScale,
  memory,
  tracing,
  https,
  websocket,
];

/** What the command line asked for. */
interface Plan {
  scenarios: Scenario[];
  dryRun: boolean;
  /** `--report FILE`: render RESULTS.md again from a run's saved JSON, run nothing. */
  reportFrom: string | null;
}

/** Reads `--only NAME[,NAME]` (or `--only=...`, or BENCH_ONLY), `--dry-run` and `--report FILE`. */
function plan(args: string[]): Plan {
  let only = Deno.env.get("BENCH_ONLY") ?? null;
  let dryRun = false;
  let reportFrom: string | null = null;
  // `deno task bench -- --only x` hands the `--` over too.
  const rest = args[0] === "--" ? args.slice(1) : args;
  for (let index = 0; index < rest.length; index++) {
    const arg = rest[index];
    if (arg === "--dry-run") dryRun = true;
    else if (arg === "--report") reportFrom = rest[++index] ?? "";
    else if (arg === "--only") only = rest[++index] ?? "";
    else if (arg.startsWith("--only=")) only = arg.slice("--only=".length);
    else {
      throw new Error(
        `unknown argument ${arg}; use --only NAME[,NAME], --dry-run or --report FILE`,
      );
    }
  }
  if (only === null) return { scenarios: [...SCENARIOS], dryRun, reportFrom };
  const names = only.split(",").map((name) => name.trim()).filter((name) => name !== "");
  const unknown = names.filter((name) => !SCENARIOS.some((each) => each.name === name));
  if (unknown.length > 0 || names.length === 0) {
    throw new Error(
      `unknown scenario ${unknown.join(", ") || "(none)"}; known: ${
        SCENARIOS.map((each) => each.name).join(", ")
      }`,
    );
  }
  return {
    scenarios: SCENARIOS.filter((each) => names.includes(each.name)),
    dryRun,
    reportFrom,
  };
}

/** Runs the scenarios in order, each shared process kept only while a later one needs it. */
async function runScenarios(scenarios: Scenario[], dir: string): Promise<Results> {
  const tools = await ensureTools();
  const results = emptyResults([...tools.notes]);
  const shared = sharedProcesses(dir, tools, results.notes);
  const context = { dir, tools, results, upstream: shared.upstream, lineup: shared.lineup };
  for (const [index, scenario] of scenarios.entries()) {
    log(`scenario ${scenario.name}: ${scenario.title}`);
    await scenario.run(context);
    const later = new Set<Shared>(scenarios.slice(index + 1).flatMap((each) => each.needs));
    await shared.release(later);
  }
  return results;
}

/** Writes the raw JSON and `RESULTS.md` (or BENCH_OUT) and prints the markdown. */
async function write(results: Results): Promise<void> {
  const durationS = (Date.now() - startedAt) / 1000;
  const { throughput, mibBodies, bodies, profile, micro, fleet, propagation, memory, tracing } =
    results;
  const { notes } = results;
  const raw = {
    throughput,
    mibBodies,
    bodies,
    profile,
    micro,
    fleet,
    propagation,
    memory,
    tracing,
    kvWriteChecks: results.kvWriteChecks,
    notes,
    durationS,
  };
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  await Deno.writeTextFile(`${RESULTS_DIR}/run-${stamp}.json`, JSON.stringify(raw, null, 2));
  await render(results, durationS);
}

/** Writes `RESULTS.md` (or BENCH_OUT) for `results` and prints it. */
async function render(results: Results, durationS: number): Promise<void> {
  const markdown = report({ machine: await machine(), durationS }, results);
  const out = Deno.env.get("BENCH_OUT") ?? `${ROOT}bench/RESULTS.md`;
  await Deno.writeTextFile(out, markdown);
  console.log(markdown);
}

/**
 * Renders a saved run again (a report change, or a verdict read another way): the raw JSON of
 * `bench/results/run-*.json`; a field an older run did not save stays empty.
 */
async function renderSaved(path: string): Promise<void> {
  const saved = JSON.parse(await Deno.readTextFile(path));
  const results: Results = { ...emptyResults(), ...saved };
  await render(results, Number(saved.durationS ?? NaN));
}

async function main(args: string[]): Promise<void> {
  const { scenarios, dryRun, reportFrom } = plan(args);
  if (reportFrom !== null) return await renderSaved(reportFrom);
  if (dryRun) {
    for (const scenario of SCENARIOS) {
      const mark = scenarios.includes(scenario) ? "run " : "skip";
      console.log(`${mark} ${scenario.name.padEnd(12)} ${scenario.title}`);
    }
    return;
  }
  await Deno.mkdir(RESULTS_DIR, { recursive: true });
  const dir = await Deno.makeTempDir({ prefix: "breakwater-bench-" });
  let results: Results;
  try {
    results = await runScenarios(scenarios, dir);
  } finally {
    await stopAll();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  await write(results);
}

if (import.meta.main) {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      stopAll().finally(() => Deno.exit(130));
    });
  }
  await main(Deno.args);
}
