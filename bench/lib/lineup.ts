/**
 * The shared upstream process and the proxies in front of it that the throughput, body and
 * profile scenarios measure: direct, nginx, the bare Hono + fetch floor, Breakwater three ways,
 * and Fastify.
 *
 * @module
 */
import { freePort, waitHttp } from "./ports.ts";
import { type Proc, spawn, type Tools } from "./processes.ts";
import { log, ROOT } from "./settings.ts";
import { startFastify, startGateway, startNginx, type Target } from "./targets.ts";

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
  ], { logPath: `${dir}/upstream.log` });
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
  ], { logPath: `${dir}/bare.log` });
  return { name: "bare Hono + pooled fetch", url: `http://127.0.0.1:${port}`, pid: bare.pid };
}

/** Breakwater with the access log off and on, and with the http1 upstream client. */
async function startBreakwaters(dir: string, upstream: BenchUpstream): Promise<Target[]> {
  const services = lineupServices(upstream);
  const api = services.api as Record<string, unknown>;
  return [
    await startGateway({
      name: "Breakwater (all on, access log off)",
      dir,
      services,
      kvPath: `${dir}/throughput.kv`,
      logLevel: "warn",
      logPath: `${dir}/gateway-warn.log`,
    }),
    await startGateway({
      name: "Breakwater (all on, access log on)",
      dir,
      services,
      kvPath: `${dir}/throughput-info.kv`,
      logLevel: "info",
      logPath: "/dev/null",
    }),
    await startGateway({
      name: "Breakwater (http1 client, log off)",
      dir,
      services: { api: { ...api, upstreamClient: "http1" } },
      kvPath: `${dir}/throughput-http1.kv`,
      logLevel: "warn",
      logPath: `${dir}/gateway-http1.log`,
    }),
  ];
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
  targets.push(startBare(dir, upstream));
  targets.push(...await startBreakwaters(dir, upstream));
  if (tools.node) {
    const fastify = await startFastify(upstream.url);
    if (typeof fastify === "string") notes.push(`Node peer skipped: ${fastify}`);
    else targets.push(fastify);
  } else notes.push("node/npm missing: Node peer skipped");
  for (const target of targets) await waitHttp(`${target.url}/`);
  log(`lineup: ${targets.map((target) => target.name).join(", ")}`);
  return targets;
}
