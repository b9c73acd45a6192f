/**
 * Per-request costs: `deno bench --json` over the bench files of the breaker, telemetry and
 * request path.
 *
 * @module
 */
import { run as runCommand } from "../lib/processes.ts";
import { waitQuiet } from "../lib/sampling.ts";
import type { BenchContext, Scenario } from "../lib/scenario.ts";
import { decoder, log } from "../lib/settings.ts";

/** The `deno bench` files, in report order. */
export const MICRO_BENCH_FILES: readonly string[] = [
  "breaker_bench.ts",
  "telemetry_bench.ts",
  "request_path_bench.ts",
];

async function run(context: BenchContext): Promise<void> {
  const { results } = context;
  for (const file of MICRO_BENCH_FILES) {
    await waitQuiet();
    log(`deno bench ${file}`);
    const output = await runCommand(Deno.execPath(), ["bench", "--json", "-A", `bench/${file}`]);
    try {
      const report = JSON.parse(decoder.decode(output.stdout));
      for (const bench of report.benches) {
        const ok = bench.results[0]?.ok;
        if (!ok) continue;
        results.micro.push({ file, name: bench.name, avgNs: ok.avg, p99Ns: ok.p99 });
      }
    } catch {
      results.notes.push(
        `deno bench ${file} failed: ${decoder.decode(output.stderr).slice(-300).trim()}`,
      );
    }
  }
}

/** The deno bench scenario. */
export const micro: Scenario = {
  name: "micro",
  title: `deno bench ${MICRO_BENCH_FILES.join(", ")}`,
  needs: [],
  run,
};
