/**
 * Where Breakwater's CPU goes: one more Breakwater (access log off) under `--cpu-prof` and
 * wrk -c32, summarised as the top frames by self time and the request path's own functions by
 * inclusive time, as shares of the samples where the main thread was not idle.
 *
 * @module
 */
import { type BenchUpstream, lineupServices } from "../lib/lineup.ts";
import { waitHttp } from "../lib/ports.ts";
import { running } from "../lib/processes.ts";
import type { ProfileRow } from "../lib/results.ts";
import { waitQuiet } from "../lib/sampling.ts";
import type { BenchContext, Scenario } from "../lib/scenario.ts";
import { DURATION_S, log } from "../lib/settings.ts";
import { startGateway } from "../lib/targets.ts";
import { wrk } from "../lib/wrk.ts";

/** The parts of a V8 `.cpuprofile` the summary reads. */
interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
    children?: number[];
  }[];
  samples: number[];
}

/** Runs the profiled gateway under load and returns its `.cpuprofile`. */
async function recordProfile(dir: string, upstream: BenchUpstream): Promise<CpuProfile> {
  log("profiling Breakwater under wrk -c32");
  const profileDir = `${dir}/profile`;
  const gateway = await startGateway({
    name: "profiled",
    dir,
    services: lineupServices(upstream),
    kvPath: `${dir}/profiled.kv`,
    logLevel: "warn",
    logPath: `${dir}/profiled.log`,
    denoFlags: ["--cpu-prof", `--cpu-prof-dir=${profileDir}`],
  });
  try {
    await waitHttp(`${gateway.url}/healthz`);
  } catch (error) {
    throw new Error(`${error}: ${(await Deno.readTextFile(`${dir}/profiled.log`)).slice(-500)}`);
  }
  await wrk(`${gateway.url}/item`, 32, 2, null);
  await waitQuiet();
  const measured = await wrk(`${gateway.url}/item`, 32, DURATION_S, gateway.pid);
  log(`profiled run: ${measured.rps.toFixed(0)} req/s, ${measured.errors} errors`);
  // The profile is written when the process exits.
  for (const proc of [...running]) if (proc.pid === gateway.pid) await proc.stop();
  let file = "";
  for await (const entry of Deno.readDir(profileDir)) file = `${profileDir}/${entry.name}`;
  return JSON.parse(await Deno.readTextFile(file)) as CpuProfile;
}

/** `function path:line`, with the path cut to what identifies it (src/, a package). */
function frameNamer(profile: CpuProfile): (id: number) => string {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  return (id) => {
    const frame = byId.get(id)!.callFrame;
    const where = frame.url.replace(/^.*\/(src|node_modules\/\.deno)\//, "$1/")
      .replace(/^.*\/(hono|@opentelemetry)/, "$1").replace(/^file:\/\//, "");
    return `${frame.functionName || "(anonymous)"}${
      where ? ` ${where}:${frame.lineNumber + 1}` : ""
    }`;
  };
}

/** Samples per frame: in the frame itself, and in it or anything it called. */
function sampleCounts(profile: CpuProfile, name: (id: number) => string) {
  const parent = new Map<number, number>();
  for (const node of profile.nodes) {
    for (const child of node.children ?? []) parent.set(child, node.id);
  }
  const counts = new Map<number, number>();
  for (const sample of profile.samples) counts.set(sample, (counts.get(sample) ?? 0) + 1);
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let busy = 0;
  let idle = 0;
  for (const [id, count] of counts) {
    const key = name(id);
    if (key === "(idle)") {
      idle += count;
      continue;
    }
    busy += count;
    self.set(key, (self.get(key) ?? 0) + count);
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const frame = name(at);
      if (seen.has(frame)) continue;
      seen.add(frame);
      inclusive.set(frame, (inclusive.get(frame) ?? 0) + count);
    }
  }
  return { self, inclusive, busy, idle };
}

/** The summary rows: 15 top self frames, 25 top inclusive frames of ours, the idle share. */
export function summariseProfile(profile: CpuProfile): ProfileRow[] {
  const { self, inclusive, busy, idle } = sampleCounts(profile, frameNamer(profile));
  const rows: ProfileRow[] = [];
  const top = (map: Map<string, number>, keep: (frame: string) => boolean, n: number) =>
    [...map].filter(([frame]) => keep(frame)).sort((a, b) => b[1] - a[1]).slice(0, n);
  for (const [frame, count] of top(self, () => true, 15)) {
    rows.push({ kind: "self", frame, percent: 100 * count / busy });
  }
  const ours = (frame: string) =>
    / src\/|hono|@opentelemetry|fetch|Headers|serve/.test(frame) && !frame.startsWith("(root)");
  for (const [frame, count] of top(inclusive, ours, 25)) {
    rows.push({ kind: "inclusive", frame, percent: 100 * count / busy });
  }
  rows.push({
    kind: "self",
    frame: "(main thread idle, share of all samples)",
    percent: 100 * idle / profile.samples.length,
  });
  return rows;
}

async function run(context: BenchContext): Promise<void> {
  if (!context.tools.wrk) {
    log("wrk missing: profile skipped");
    return;
  }
  const upstream = await context.upstream();
  try {
    const probe = await fetch(`${upstream.url}/item`).then(async (response) => {
      await response.body?.cancel();
      return response.status;
    }, (error) => String(error));
    log(`upstream before profiling: ${probe}`);
    context.results.profile.push(...summariseProfile(await recordProfile(context.dir, upstream)));
  } catch (error) {
    context.results.notes.push(`profile failed: ${error}`);
  }
}

/** The CPU profile scenario. */
export const profile: Scenario = {
  name: "profile",
  title: "--cpu-prof of Breakwater under wrk -c32: where the CPU goes",
  needs: ["upstream"],
  run,
};
