/**
 * What a scenario is, and the shared processes it may ask for. The driver (`bench/run.ts`)
 * starts a shared process on the first scenario that needs it and stops it after the last one,
 * so scenarios run alone (`--only NAME`) or together on the same processes.
 *
 * @module
 */
import { type BenchUpstream, LINEUP_SINK, startBenchUpstream, startLineup } from "./lineup.ts";
import { running, type Tools } from "./processes.ts";
import type { Results } from "./results.ts";
import { log } from "./settings.ts";
import type { Target } from "./targets.ts";

/** Shared processes: the upstream alone, or the upstream with every proxy in front of it. */
export type Shared = "upstream" | "lineup";

/** What a scenario gets to run with. */
export interface BenchContext {
  /** The run's temporary folder (configs, KV files, logs). */
  dir: string;
  /** The external tools found. */
  tools: Tools;
  /** Where the scenario puts its rows (and `notes`). */
  results: Results;
  /** The shared upstream process, started on first use. */
  upstream(): Promise<BenchUpstream>;
  /** Direct plus every proxy in front of the shared upstream, started on first use. */
  lineup(): Promise<Target[]>;
}

/** One part of the bench run: `bench/scenarios/NAME.ts`. */
export interface Scenario {
  /** The name `--only` selects it by. */
  name: string;
  /** One line for `--dry-run`. */
  title: string;
  /** Shared processes it uses (kept running until the last scenario that needs them). */
  needs: readonly Shared[];
  /** Measures and adds its rows to `context.results`. */
  run(context: BenchContext): Promise<void>;
}

/** The shared processes of one run and their lifecycle. */
export interface SharedProcesses {
  /** See {@link BenchContext.upstream}. */
  upstream(): Promise<BenchUpstream>;
  /** See {@link BenchContext.lineup}. */
  lineup(): Promise<Target[]>;
  /** Stops what none of `stillNeeded` uses. */
  release(stillNeeded: ReadonlySet<Shared>): Promise<void>;
}

/** Lazily started shared processes for a run in `dir`. */
export function sharedProcesses(dir: string, tools: Tools, notes: string[]): SharedProcesses {
  let upstream: Promise<BenchUpstream> | null = null;
  let lineup: Promise<Target[]> | null = null;
  const startUpstream = () => upstream ??= startBenchUpstream(dir);
  return {
    upstream: startUpstream,
    lineup: () => lineup ??= startUpstream().then((up) => startLineup(tools, dir, up, notes)),
    async release(stillNeeded) {
      if (lineup !== null && !stillNeeded.has("lineup")) {
        const targets = await lineup.catch(() => []);
        const up = await startUpstream();
        await stopProxies(targets, up);
        lineup = null;
      }
      if (upstream !== null && !stillNeeded.has("upstream") && !stillNeeded.has("lineup")) {
        await (await upstream.catch(() => null))?.proc.stop();
        upstream = null;
      }
    },
  };
}

/** Stops every proxy of the lineup; the upstream stays. */
async function stopProxies(targets: Target[], upstream: BenchUpstream): Promise<void> {
  const pids = new Set(targets.map((target) => target.pid));
  for (const proc of [...running]) {
    if (proc === upstream.proc || (!pids.has(proc.pid) && proc.name !== LINEUP_SINK)) continue;
    await proc.stop();
    if (Deno.env.get("BENCH_DEBUG")) {
      const alive = await fetch(`${upstream.url}/item`).then((r) => r.text()).catch((e) =>
        String(e)
      );
      log(`after stopping ${proc.name}: upstream ${alive.slice(0, 30)}`);
    }
  }
}
