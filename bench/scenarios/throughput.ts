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

/** A wrk run on a quiet machine, once more when something outside the test took over 15%. */
async function measure(
  target: Target,
  connections: number,
  upstream: BenchUpstream,
  dir: string,
  kvWriteChecks: KvWriteCheck[],
  idleWalBytes: number,
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
    result = await wrk(`${target.url}/item`, connections, DURATION_S, target.pid, others);
    if (kvBefore) {
      const kvAfter = kvFiles(kvPath);
      kvWriteChecks.push({
        requests: result.requests,
        walBytes: kvAfter.walBytes - kvBefore.walBytes,
        idleWalBytes,
        changed: kvAfter.walMtime !== kvBefore.walMtime || kvAfter.dbMtime !== kvBefore.dbMtime,
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
  // What the KV file gets with no traffic at all (heartbeats, re-syncs) over one run's length:
  // the per-request check is against this, not against zero.
  const kvPath = `${dir}/throughput.kv`;
  const idleBefore = kvFiles(kvPath).walBytes;
  await new Promise((resolve) => setTimeout(resolve, DURATION_S * 1000));
  const idleWalBytes = Math.max(0, kvFiles(kvPath).walBytes - idleBefore);
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
          idleWalBytes,
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
      const result = await wrk(
        `${target.url}/mib`,
        MIB_CONNECTIONS,
        DURATION_S,
        target.pid,
        others,
      );
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
