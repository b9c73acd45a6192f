/**
 * Proxy throughput and latency: wrk at 32 and 128 connections against every target of the
 * lineup, interleaved within each repetition, with the KV files of Breakwater (access log off)
 * watched for writes.
 *
 * @module
 */
import type { BenchUpstream } from "../lib/lineup.ts";
import { BREAKWATER_ROWS, isDirect } from "../lib/lineup.ts";
import type { KvWriteCheck, ThroughputRow } from "../lib/results.ts";
import { commitsBetween, walCommits } from "../lib/kv_wal.ts";
import { kvFiles, waitQuiet } from "../lib/sampling.ts";
import type { BenchContext, Scenario } from "../lib/scenario.ts";
import {
  CONNECTIONS,
  DURATION_S,
  FOREIGN_REPEAT_SHARE,
  log,
  QUIET_WAIT_MS,
  REPS,
} from "../lib/settings.ts";
import type { Target } from "../lib/targets.ts";
import { wrk, type WrkResult } from "../lib/wrk.ts";
import { freeze } from "../lib/freeze.ts";

/** The targets to stop while `target` runs: every other one but the upstream (it serves). */
function neighboursOf(target: Target, targets: Target[], upstream: BenchUpstream): number[] {
  return targets.map((each) => each.pid).filter((pid) =>
    pid !== target.pid && pid !== upstream.proc.pid
  );
}

/** A wrk run on a quiet machine, once more when something outside the test took over 15%. */
async function measure(
  target: Target,
  connections: number,
  upstream: BenchUpstream,
  dir: string,
  kvWriteChecks: KvWriteCheck[],
  baseline: KvBaseline,
  neighbours: number[],
): Promise<WrkResult | undefined> {
  const others = isDirect(target, upstream) ? [] : [upstream.proc.pid];
  let result: WrkResult | undefined;
  for (let attempt = 0; attempt < 2; attempt++) {
    const waitedMs = await waitQuiet(QUIET_WAIT_MS);
    if (waitedMs > 1000) log(`waited ${waitedMs} ms for a quiet machine`);
    const kvPath = `${dir}/throughput.kv`;
    // Only the defaults row runs on throughput.kv.
    const watchKv = target.name === BREAKWATER_ROWS.defaults;
    // A missing file would read as "unchanged": only count runs where the KV file exists.
    const kvBefore = watchKv && kvFiles(kvPath).dbMtime > 0 ? kvFiles(kvPath) : null;
    const commitsBefore = kvBefore ? walCommits(kvPath) : null;
    // The other targets stopped meanwhile (bench/lib/freeze.ts).
    const resume = freeze(neighbours);
    try {
      result = await wrk(`${target.url}/item`, connections, DURATION_S, target.pid, others);
    } finally {
      resume();
    }
    if (kvBefore) {
      const kvAfter = kvFiles(kvPath);
      kvWriteChecks.push({
        requests: result.requests,
        walBytes: kvAfter.walBytes - kvBefore.walBytes,
        changed: kvAfter.walMtime !== kvBefore.walMtime || kvAfter.dbMtime !== kvBefore.dbMtime,
        commits: commitsBetween(commitsBefore, walCommits(kvPath)),
        ...baseline,
      });
    }
    if (result.foreignCpuShare <= FOREIGN_REPEAT_SHARE) break;
    log(`foreign CPU ${(100 * result.foreignCpuShare).toFixed(0)}%: repeating`);
  }
  return result;
}

async function run(context: BenchContext): Promise<void> {
  const { results, dir } = context;
  if (!context.tools.wrk) {
    results.notes.push("wrk missing: throughput skipped");
    return;
  }
  const upstream = await context.upstream();
  const targets = await context.lineup();
  // Warm every target (JIT, pools), then interleave targets within each repetition so drift
  // on the noisy machine spreads over all of them.
  for (const target of targets) await wrk(`${target.url}/item`, 32, 1, null);
  const defaults = targets.find((target) => target.name === BREAKWATER_ROWS.defaults);
  const baseline = await kvBaseline(`${dir}/throughput.kv`, defaults?.url ?? null);
  const rows: ThroughputRow[] = [];
  for (const connections of CONNECTIONS) {
    for (const target of targets) rows.push({ target: target.name, connections, runs: [] });
  }
  results.throughput.push(...rows);
  for (let rep = 0; rep < REPS; rep++) {
    for (const connections of CONNECTIONS) {
      for (const target of targets) {
        const result = await measure(
          target,
          connections,
          upstream,
          dir,
          results.kvWriteChecks,
          baseline,
          neighboursOf(target, targets, upstream),
        );
        if (!result) continue;
        rows.find((row) => row.target === target.name && row.connections === connections)!.runs
          .push(result);
        log(
          `rep ${rep + 1} c${connections} ${target.name}: ${result.rps.toFixed(0)} req/s p99 ${
            result.p99Ms.toFixed(2)
          } ms${result.errors ? ` errors ${result.errors}` : ""}`,
        );
      }
    }
  }
  await measureMibBodies(context, targets);
}

/** What the KV file gets in one run's length without the load: the per-request check's base. */
type KvBaseline = Pick<
  KvWriteCheck,
  "idleWalBytes" | "idleCommits" | "lightCommits" | "lightRequests"
>;

/**
 * The KV's writes over one run's length with no traffic (heartbeats), then under light traffic
 * (a request every 50 ms). Writes that come per second while the gateway is busy (the fleet
 * retry budget publishing its per-second counts, the fleet activity exchange) happen in the
 * light run as in a wrk run; a write per request would not. So "zero KV writes per successful
 * request" compares a wrk run's commits with the light run's, per extra request.
 */
async function kvBaseline(kvPath: string, url: string | null): Promise<KvBaseline> {
  const idleBefore = kvFiles(kvPath).walBytes;
  const idleCommitsBefore = walCommits(kvPath);
  await new Promise((resolve) => setTimeout(resolve, DURATION_S * 1000));
  const idleWalBytes = Math.max(0, kvFiles(kvPath).walBytes - idleBefore);
  const idleCommits = commitsBetween(idleCommitsBefore, walCommits(kvPath));
  if (url === null) return { idleWalBytes, idleCommits, lightCommits: null, lightRequests: 0 };
  const lightBefore = walCommits(kvPath);
  const endAt = performance.now() + DURATION_S * 1000;
  let lightRequests = 0;
  while (performance.now() < endAt) {
    const response = await fetch(`${url}/item`, { signal: AbortSignal.timeout(5000) });
    await response.body?.cancel();
    if (response.ok) lightRequests++;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const lightCommits = commitsBetween(lightBefore, walCommits(kvPath));
  return { idleWalBytes, idleCommits, lightCommits, lightRequests };
}

/** wrk connections for the 1 MiB bodies: enough to keep every proxy busy, few enough for RSS. */
export const MIB_CONNECTIONS = 8;

/**
 * 1 MiB responses through every target with wrk (same method as the small ones), interleaved
 * per repetition: MiB/s is req/s, CPU us/req is CPU per MiB, RSS after the run shows whether
 * memory stays flat.
 */
async function measureMibBodies(context: BenchContext, targets: Target[]): Promise<void> {
  const { results } = context;
  const upstream = await context.upstream();
  const rows: ThroughputRow[] = targets.map((target) => ({
    target: target.name,
    connections: MIB_CONNECTIONS,
    runs: [],
  }));
  results.mibBodies.push(...rows);
  for (const target of targets) await wrk(`${target.url}/mib`, MIB_CONNECTIONS, 1, null);
  for (let rep = 0; rep < REPS; rep++) {
    for (const [index, target] of targets.entries()) {
      await waitQuiet(QUIET_WAIT_MS);
      const others = isDirect(target, upstream) ? [] : [upstream.proc.pid];
      const resume = freeze(neighboursOf(target, targets, upstream));
      let result: WrkResult;
      try {
        result = await wrk(`${target.url}/mib`, MIB_CONNECTIONS, DURATION_S, target.pid, others);
      } finally {
        resume();
      }
      rows[index].runs.push(result);
      log(`rep ${rep + 1} 1 MiB ${target.name}: ${result.rps.toFixed(0)} MiB/s`);
    }
  }
}

/** The throughput scenario. */
export const throughput: Scenario = {
  name: "throughput",
  title:
    "wrk -c32/-c128 and 1 MiB bodies: direct, nginx, HAProxy, bare fetch proxy, Breakwater variants, Fastify",
  needs: ["lineup"],
  run,
};
