/**
 * What tracing costs the gateway: CPU per request and req/s under wrk with tracing off (no OTLP
 * endpoint), on with every request sampled (spans exported over OTLP/HTTP protobuf, the
 * default, to a local sink that reads and discards them), and on but sampled out
 * (`OTEL_TRACES_SAMPLER=traceidratio`, `OTEL_TRACES_SAMPLER_ARG=0`).
 *
 * The three gateways run side by side in front of the shared upstream and are measured in
 * alternation (off, on, sampled out, off, on, ...), so drift on the shared machine spreads over
 * all three; each ratio to "off" is also taken within a repetition.
 *
 * @module
 */
import type { BenchUpstream } from "../lib/lineup.ts";
import { lineupServices } from "../lib/lineup.ts";
import { loadCpus } from "../lib/cpus.ts";
import { freePort, waitHttp } from "../lib/ports.ts";
import { type Proc, spawn, stopPid } from "../lib/processes.ts";
import type { TracingRow } from "../lib/results.ts";
import { cpuSeconds, waitQuiet } from "../lib/sampling.ts";
import type { BenchContext, Scenario } from "../lib/scenario.ts";
import { log, REPS, sleep } from "../lib/settings.ts";
import { startGateway, type Target } from "../lib/targets.ts";
import { wrk, type WrkResult } from "../lib/wrk.ts";

/** wrk seconds per run: short, as the machine is shared. */
export const TRACING_DURATION_S = 5;
/** Export silence that ends a run's tail: the SDK's 5 s batch delay plus a margin. */
const EXPORT_QUIET_MS = 6000;
/** Upper bound on one run's tail. */
const EXPORT_DRAIN_MAX_MS = 20_000;
/** How long to wait for the shared machine to be 85% idle before a run. */
const QUIET_WAIT_MAX_MS = 30_000;
/** wrk connections. */
export const TRACING_CONNECTIONS = 32;
/** The product's target for tracing on at 100% sampling, as CPU per request over "off". */
export const TRACING_ON_CPU_TARGET = 1.15;
/** What "~1.0x" is taken to mean for a sampled-out request: within run-to-run noise. */
export const TRACING_SAMPLED_OUT_CPU_TARGET = 1.05;

/** The variants, in the order they alternate. */
export const TRACING_VARIANTS = ["off", "on, 100% sampled", "on, sampled out"] as const;
type Variant = typeof TRACING_VARIANTS[number];

/**
 * An OTLP/HTTP sink in its own process (so its CPU is neither the gateway's nor "foreign"):
 * reads every export whole, answers 200 with an empty protobuf `ExportTraceServiceResponse`,
 * and counts exports and bytes for `GET /count`.
 */
function sinkSource(port: number): string {
  return `let exports = 0, bytes = 0;
Deno.serve({ hostname: "127.0.0.1", port: ${port}, onListen() {} }, async (request) => {
  if (request.method === "GET") return Response.json({ exports, bytes });
  bytes += (await request.arrayBuffer()).byteLength;
  exports++;
  return new Response(new Uint8Array(0), { headers: { "content-type": "application/x-protobuf" } });
});`;
}

/** The running sink. */
export interface OtlpSink {
  proc: Proc;
  url: string;
  /** Exports and bytes received so far. */
  count(): Promise<{ exports: number; bytes: number }>;
}

/** Starts the OTLP sink process (named `name`) and waits until it answers. */
export async function startSink(dir: string, name = "otlp-sink"): Promise<OtlpSink> {
  const port = freePort();
  const proc = spawn(name, [Deno.execPath(), "eval", sinkSource(port)], {
    logPath: `${dir}/${name}.log`,
    cpus: loadCpus(),
  });
  const url = `http://127.0.0.1:${port}`;
  await waitHttp(`${url}/count`);
  return {
    proc,
    url,
    count: async () => {
      const response = await fetch(`${url}/count`, { signal: AbortSignal.timeout(5000) });
      return await response.json();
    },
  };
}

/** The environment that turns each variant on; "off" sets nothing (no endpoint, no spans). */
function variantEnv(variant: Variant, sink: OtlpSink): Record<string, string> {
  if (variant === "off") return {};
  const env: Record<string, string> = {
    // Traces only: metrics stay on /metrics alone in every variant.
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${sink.url}/v1/traces`,
  };
  if (variant === "on, sampled out") {
    env.OTEL_TRACES_SAMPLER = "traceidratio";
    env.OTEL_TRACES_SAMPLER_ARG = "0";
  }
  return env;
}

/** One measured run of one variant. */
interface TracingRun {
  /** wrk's figures; `cpuUsPerRequest` includes the tail below. */
  result: WrkResult;
  /** Gateway CPU per request spent after wrk stopped, until the last export of the run. */
  tailUsPerRequest: number;
  /** Exports (and their bytes) the sink received for this run. */
  exports: number;
  bytes: number;
}

/**
 * Waits until the sink has seen no export for {@link EXPORT_QUIET_MS}: the batch span
 * processor sends what the run left in its queue on its schedule (the SDK's default
 * `OTEL_BSP_SCHEDULE_DELAY` is 5 s), and that export belongs to the run. Bounded.
 */
async function waitExportsDrained(sink: OtlpSink): Promise<void> {
  const deadline = Date.now() + EXPORT_DRAIN_MAX_MS;
  let last = (await sink.count()).exports;
  let quietSince = Date.now();
  while (Date.now() - quietSince < EXPORT_QUIET_MS && Date.now() < deadline) {
    await sleep(250);
    const now = (await sink.count()).exports;
    if (now !== last) {
      last = now;
      quietSince = Date.now();
    }
  }
}

/**
 * A wrk run on a quiet machine (once more when something outside the test took over 15%),
 * followed by the export tail, charged to the gateway. Every variant waits out the same tail,
 * so the idle CPU in it is charged alike.
 */
async function measure(target: Target, others: number[], sink: OtlpSink): Promise<TracingRun> {
  let run: TracingRun | undefined;
  for (let attempt = 0; attempt < 2; attempt++) {
    const waitedMs = await waitQuiet(QUIET_WAIT_MAX_MS);
    if (waitedMs > 1000) log(`waited ${waitedMs} ms for a quiet machine`);
    const before = await sink.count();
    const result = await wrk(
      `${target.url}/item`,
      TRACING_CONNECTIONS,
      TRACING_DURATION_S,
      target.pid,
      others,
    );
    const cpuAtEnd = await cpuSeconds(target.pid);
    await waitExportsDrained(sink);
    const tailUsPerRequest = (await cpuSeconds(target.pid) - cpuAtEnd) * 1e6 / result.requests;
    const after = await sink.count();
    run = {
      result: { ...result, cpuUsPerRequest: result.cpuUsPerRequest + tailUsPerRequest },
      tailUsPerRequest,
      exports: after.exports - before.exports,
      bytes: after.bytes - before.bytes,
    };
    if (result.foreignCpuShare <= 0.15) break;
    log(`foreign CPU ${(100 * result.foreignCpuShare).toFixed(0)}%: repeating`);
  }
  return run!;
}

/** Starts one gateway per variant into `targets` (filled as they start, so all get stopped). */
async function startVariants(
  dir: string,
  upstream: BenchUpstream,
  sink: OtlpSink,
  targets: Map<Variant, Target>,
): Promise<void> {
  for (const [index, variant] of TRACING_VARIANTS.entries()) {
    const gateway = await startGateway({
      name: `Breakwater (tracing ${variant})`,
      dir,
      services: lineupServices(upstream),
      kvPath: `${dir}/tracing-${index}.kv`,
      logLevel: "warn",
      logPath: `${dir}/gateway-tracing-${index}.log`,
      extraEnv: variantEnv(variant, sink),
    });
    targets.set(variant, gateway);
    await waitHttp(`${gateway.url}/healthz`);
  }
}

async function run(context: BenchContext): Promise<void> {
  const { results, dir } = context;
  if (!context.tools.wrk) {
    results.notes.push("wrk missing: tracing skipped");
    return;
  }
  const upstream = await context.upstream();
  const sink = await startSink(dir);
  const targets = new Map<Variant, Target>();
  try {
    await startVariants(dir, upstream, sink, targets);
    // JIT, pools and the span pipeline warmed before anything counts; the warm-up's spans
    // exported before the first run, so they do not land in it.
    for (const target of targets.values()) {
      await wrk(`${target.url}/item`, TRACING_CONNECTIONS, 1, null);
    }
    await waitExportsDrained(sink);
    const rows = TRACING_VARIANTS.map((variant): TracingRow => ({
      variant,
      runs: [],
      tailUsPerRequest: [],
      exports: 0,
      exportBytes: 0,
    }));
    results.tracing.push(...rows);
    const others = [upstream.proc.pid, sink.proc.pid];
    for (let rep = 0; rep < REPS; rep++) {
      for (const [index, variant] of TRACING_VARIANTS.entries()) {
        const run = await measure(targets.get(variant)!, others, sink);
        const row = rows[index];
        row.runs.push(run.result);
        row.tailUsPerRequest.push(run.tailUsPerRequest);
        row.exports += run.exports;
        row.exportBytes += run.bytes;
        log(
          `rep ${rep + 1} tracing ${variant}: ${run.result.rps.toFixed(0)} req/s, ` +
            `${run.result.cpuUsPerRequest.toFixed(1)} us CPU/req ` +
            `(${run.tailUsPerRequest.toFixed(1)} after wrk), ${run.exports} exports, foreign ` +
            `CPU ${(100 * run.result.foreignCpuShare).toFixed(0)}%${
              run.result.errors ? `, errors ${run.result.errors}` : ""
            }`,
        );
      }
    }
  } finally {
    for (const target of targets.values()) await stopPid(target.pid);
    await sink.proc.stop();
  }
}

/** The tracing cost scenario. */
export const tracing: Scenario = {
  name: "tracing",
  title: "wrk -c32 5 s, alternating: tracing off, on at 100%, sampled out (CPU/req, req/s)",
  needs: ["upstream"],
  run,
};
