/**
 * The shared upstream process and the proxies in front of it that the throughput, body and
 * profile scenarios measure: direct, nginx, the bare Hono + fetch floor, Breakwater three ways,
 * and Fastify.
 *
 * @module
 */
import { loadCpus, proxyCpus } from "./cpus.ts";
import { freePort, waitHttp } from "./ports.ts";
import { type Proc, spawn, type Tools } from "./processes.ts";
import { log, ROOT } from "./settings.ts";
import { startSink } from "../scenarios/tracing.ts";
import { startFastify, startGateway, startHaproxy, startNginx, type Target } from "./targets.ts";

/** `bench/upstream.ts` running as its own process. */
export interface BenchUpstream {
  /** The process. */
  proc: Proc;
  /** Its port. */
  port: number;
  /** `http://127.0.0.1:PORT`. */
  url: string;
}

/** Starts `bench/upstream.ts` and waits until it answers. */
export async function startBenchUpstream(dir: string): Promise<BenchUpstream> {
  const port = freePort();
  const proc = spawn("upstream", [
    Deno.execPath(),
    "run",
    "--allow-net",
    `${ROOT}bench/upstream.ts`,
    String(port),
  ], { logPath: `${dir}/upstream.log`, cpus: loadCpus() });
  const url = `http://127.0.0.1:${port}`;
  await waitHttp(`${url}/`);
  return { proc, port, url };
}

/** The `services` every Breakwater of the lineup (and the profiled one) runs. */
export function lineupServices(upstream: BenchUpstream): Record<string, unknown> {
  return {
    api: {
      prefix: "/",
      upstreams: [upstream.url],
      pool: { maxConnections: 256, maxPending: 4096 },
    },
  };
}

/** The direct target is the upstream itself: its pid is charged, no proxy in between. */
export function isDirect(target: Target, upstream: BenchUpstream): boolean {
  return target.pid === upstream.proc.pid;
}

/** The bare Hono + pooled `fetch` proxy: the floor every feature is measured against. */
function startBare(dir: string, upstream: BenchUpstream): Target {
  const port = freePort();
  const bare = spawn("bare", [
    Deno.execPath(),
    "run",
    `--config=${ROOT}deno.json`,
    "--allow-net",
    `${ROOT}bench/bare_proxy.ts`,
    String(port),
    upstream.url,
  ], { logPath: `${dir}/bare.log`, cpus: proxyCpus() });
  return { name: "bare Hono + pooled fetch", url: `http://127.0.0.1:${port}`, pid: bare.pid };
}

/** The process name of the lineup's OTLP sink (stopped with the lineup's proxies). */
export const LINEUP_SINK = "lineup-otlp-sink";

/** Row names of the Breakwater variants (the report picks its baselines by them). */
export const BREAKWATER_ROWS = {
  defaults: "Breakwater (defaults: http1 client, 1 worker, access log off)",
  logOn: "Breakwater (http1, access log on)",
  fetch: "Breakwater (fetch client, access log off)",
  tracing: "Breakwater (http1, tracing on, 100% sampled)",
  workersOne: "Breakwater (http1, 1 worker on every core, access log off)",
  workers: "Breakwater (http1, workers 2 on every core, access log off)",
} as const;

/**
 * True when the gateway serves the public port from several workers: the `workers` key exists
 * in the config schema and `src/main.ts` acts on it. Until then the workers row is left out
 * with a note rather than measured as a mislabelled single worker.
 */
function workersSupported(): boolean {
  const read = (path: string) => {
    try {
      return Deno.readTextFileSync(`${ROOT}${path}`);
    } catch {
      return "";
    }
  };
  return /\bworkers:/.test(read("src/config/schema.ts")) && /workers/.test(read("src/main.ts"));
}

/**
 * Breakwater in its defaults (http1 client, one worker) with the access log off and on, with
 * the fetch client, with tracing on at 100% sampling (spans to `sinkUrl`), and with 2 workers
 * when the gateway supports them.
 */
async function startBreakwaters(
  dir: string,
  upstream: BenchUpstream,
  sinkUrl: string,
  notes: string[],
): Promise<Target[]> {
  const services = lineupServices(upstream);
  const api = services.api as Record<string, unknown>;
  const targets = [
    await startGateway({
      name: BREAKWATER_ROWS.defaults,
      dir,
      services,
      kvPath: `${dir}/throughput.kv`,
      logLevel: "warn",
      logPath: `${dir}/gateway-warn.log`,
    }),
    await startGateway({
      name: BREAKWATER_ROWS.logOn,
      dir,
      services,
      kvPath: `${dir}/throughput-info.kv`,
      logLevel: "info",
      logPath: "/dev/null",
    }),
    await startGateway({
      name: BREAKWATER_ROWS.fetch,
      dir,
      services: { api: { ...api, upstreamClient: "fetch" } },
      kvPath: `${dir}/throughput-fetch.kv`,
      logLevel: "warn",
      logPath: `${dir}/gateway-fetch.log`,
    }),
    await startGateway({
      name: BREAKWATER_ROWS.tracing,
      dir,
      services,
      kvPath: `${dir}/throughput-tracing.kv`,
      logLevel: "warn",
      logPath: `${dir}/gateway-tracing.log`,
      extraEnv: { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${sinkUrl}/v1/traces` },
    }),
  ];
  if (workersSupported()) {
    // Both workers rows run on every core, unpinned (bench/lib/cpus.ts): 2 workers need more
    // than the proxy side's cores, and their ratio must compare like with like.
    for (const [name, workers] of [[BREAKWATER_ROWS.workersOne, 1], [BREAKWATER_ROWS.workers, 2]]) {
      targets.push(
        await startGateway({
          name: String(name),
          dir,
          services,
          kvPath: `${dir}/throughput-workers${workers}.kv`,
          logLevel: "warn",
          logPath: `${dir}/gateway-workers${workers}.log`,
          extra: { workers },
          cpus: null,
        }),
      );
    }
  } else {
    notes.push("workers 2: not yet (the gateway does not serve from several workers yet)");
  }
  return targets;
}

/**
 * Starts every proxy the tools allow in front of `upstream` and waits until each answers.
 * The first target is the upstream itself ("direct"). What is skipped goes to `notes`.
 */
export async function startLineup(
  tools: Tools,
  dir: string,
  upstream: BenchUpstream,
  notes: string[],
): Promise<Target[]> {
  const targets: Target[] = [{
    name: "direct (Deno.serve upstream)",
    url: upstream.url,
    pid: upstream.proc.pid,
  }];
  if (tools.nginx) targets.push(await startNginx(dir, upstream.port));
  else notes.push("nginx missing: nginx baseline skipped");
  if (tools.haproxy) targets.push(await startHaproxy(dir, upstream.port));
  else notes.push("haproxy missing: HAProxy peer skipped");
  targets.push(startBare(dir, upstream));
  const sink = await startSink(dir, LINEUP_SINK);
  targets.push(...await startBreakwaters(dir, upstream, sink.url, notes));
  if (tools.node) {
    const fastify = await startFastify(upstream.url);
    if (typeof fastify === "string") notes.push(`Node peer skipped: ${fastify}`);
    else targets.push(fastify);
  } else notes.push("node/npm missing: Node peer skipped");
  for (const target of targets) await waitHttp(`${target.url}/`);
  log(`lineup: ${targets.map((target) => target.name).join(", ")}`);
  return targets;
}
