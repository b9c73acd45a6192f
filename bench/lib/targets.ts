/**
 * The proxies a run measures and how each is started: Breakwater (\`src/main.ts\` on a written
 * config), nginx, and Fastify with @fastify/http-proxy.
 *
 * @module
 */
import { GATEWAY_V8_FLAGS } from "../../src/runtime_flags.ts";
import { proxyCpus } from "./cpus.ts";
import { freePort } from "./ports.ts";
import { run, spawn } from "./processes.ts";
import { decoder, log, RESULTS_DIR, ROOT } from "./settings.ts";

/** A proxy (or the upstream itself) that wrk and curl are pointed at. */
export interface Target {
  /** Its row name in the report. */
  name: string;
  /** \`http://127.0.0.1:PORT\`. */
  url: string;
  /** The process charged with its CPU and memory. */
  pid: number;
}

/** The `deno run` command line of a Breakwater gateway on `configPath`. */
export function gatewayArgs(dir: string, configPath: string, denoFlags: string[] = []): string[] {
  return [
    Deno.execPath(),
    "run",
    // As `deno task start` and the image run it (src/runtime_flags.ts).
    ...GATEWAY_V8_FLAGS,
    ...denoFlags,
    `--config=${ROOT}deno.json`,
    "--allow-net",
    "--allow-env",
    "--allow-sys",
    "--allow-read",
    `--allow-write=${dir}`,
    `${ROOT}src/main.ts`,
    "--config",
    configPath,
  ];
}

/** How {@link startGateway} runs one gateway. */
export interface GatewayOptions {
  /** Process and config file name. */
  name: string;
  /** The run's temporary folder (config files, KV files, logs). */
  dir: string;
  /** The config's \`services\`. */
  services: Record<string, unknown>;
  /** \`kv.path\`: a file, or \`:memory:\`. */
  kvPath: string;
  /** \`BREAKWATER_LOG_LEVEL\`. */
  logLevel: string;
  /** Where stdout and stderr go. */
  logPath: string;
  /** More environment. */
  extraEnv?: Record<string, string>;
  /** \`kv.syncIntervalMs\`, when not the default. */
  kvSyncMs?: number;
  /** Flags for \`deno run\` (\`--cpu-prof\`). */
  denoFlags?: string[];
  /** More top-level config keys (\`workers\`). */
  extra?: Record<string, unknown>;
  /**
   * The cores it runs on (\`taskset -c\`): default the proxy side's (bench/lib/cpus.ts); null
   * for every core (the workers rows).
   */
  cpus?: string | null;
}

/** Writes a config and starts `src/main.ts` on free ports (does not wait for it to listen). */
export async function startGateway(
  options: GatewayOptions,
): Promise<Target & { adminUrl: string }> {
  const port = freePort();
  const adminPort = freePort();
  const configPath = `${options.dir}/${options.name}.json`;
  await Deno.writeTextFile(
    configPath,
    JSON.stringify({
      listen: { hostname: "127.0.0.1", port },
      admin: { hostname: "127.0.0.1", port: adminPort },
      kv: options.kvSyncMs
        ? { path: options.kvPath, syncIntervalMs: options.kvSyncMs }
        : { path: options.kvPath },
      telemetry: { prometheus: true },
      limits: { maxBodyBytes: 200 * 1024 * 1024, maxConnections: 10_000 },
      services: options.services,
      // One thread unless a row asks for workers: the rows compare features on one isolate,
      // whatever the default ("auto") would pick on the bench machine.
      workers: 1,
      ...options.extra,
    }),
  );
  const proc = spawn(options.name, gatewayArgs(options.dir, configPath, options.denoFlags), {
    logPath: options.logPath,
    cpus: options.cpus === undefined ? proxyCpus() : options.cpus,
    env: { BREAKWATER_LOG_LEVEL: options.logLevel, ...options.extraEnv },
  });
  return {
    name: options.name,
    url: `http://127.0.0.1:${port}`,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    pid: proc.pid,
  };
}

/** What differs between the nginx configurations the scenarios measure. */
export interface NginxOptions {
  /** Process name in the logs and the prefix directory under `dir` (one per nginx). */
  name: string;
  /** The target's row name in the report. */
  label: string;
  /** Directives inside `http { }` before the server block (body limits, upstream pools). */
  http: string[];
  /** What follows the address on the `listen` line (`ssl http2`), if anything. */
  listen?: string;
  /** Directives inside `server { }` after `listen` (certificates, locations). */
  server: string[];
  /** The target URL's scheme. */
  scheme?: "http" | "https";
}

/**
 * One nginx worker in the foreground, with its temp paths and logs under `dir/name`, on a
 * free port; the scenarios give only the directives that differ.
 *
 * @example
 * ```ts
 * const target = await startNginxWith(dir, {
 *   name: "nginx-ws",
 *   label: "nginx",
 *   http: [],
 *   server: ["location / { proxy_pass http://127.0.0.1:8080; }"],
 * });
 * ```
 */
export async function startNginxWith(dir: string, options: NginxOptions): Promise<Target> {
  const port = freePort();
  const prefix = `${dir}/${options.name}`;
  await Deno.mkdir(prefix, { recursive: true });
  const conf = `${prefix}/nginx.conf`;
  const indent = (lines: string[], spaces: string) => lines.map((l) => `${spaces}${l}\n`).join("");
  await Deno.writeTextFile(
    conf,
    `worker_processes 1;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${prefix}/body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
${indent(options.http, "  ")}  server {
    listen 127.0.0.1:${port}${options.listen ? ` ${options.listen}` : ""};
${indent(options.server, "    ")}  }
}
`,
  );
  const proc = spawn(options.name, [
    "nginx",
    "-p",
    prefix,
    "-e",
    `${prefix}/error.log`,
    "-c",
    conf,
    "-g",
    "daemon off;",
  ], { logPath: `${prefix}/stdout.log`, cpus: proxyCpus() });
  return {
    name: options.label,
    url: `${options.scheme ?? "http"}://127.0.0.1:${port}`,
    pid: proc.pid,
  };
}

/** nginx with one worker and a keep-alive upstream pool, as the throughput baseline. */
export function startNginx(dir: string, upstreamPort: number): Promise<Target> {
  return startNginxWith(dir, {
    name: "nginx",
    label: "nginx",
    http: [
      "client_max_body_size 0;",
      `upstream bench_upstream { server 127.0.0.1:${upstreamPort}; keepalive 32; }`,
    ],
    server: [
      "location / {",
      "  proxy_pass http://bench_upstream;",
      "  proxy_http_version 1.1;",
      '  proxy_set_header Connection "";',
      "  proxy_request_buffering off;",
      "  proxy_buffering off;",
      "}",
    ],
  });
}

/**
 * HAProxy with one thread (`nbthread 1`, as nginx has one worker) and keep-alive to the
 * upstream (`http-reuse always`), in the foreground (`-db`).
 */
export async function startHaproxy(dir: string, upstreamPort: number): Promise<Target> {
  const port = freePort();
  const conf = `${dir}/haproxy.cfg`;
  await Deno.writeTextFile(
    conf,
    `global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend bench
  bind 127.0.0.1:${port}
  default_backend upstream
backend upstream
  server u1 127.0.0.1:${upstreamPort} maxconn 256
`,
  );
  const proc = spawn("haproxy", ["haproxy", "-db", "-f", conf], {
    logPath: `${dir}/haproxy.log`,
    cpus: proxyCpus(),
  });
  return { name: "HAProxy", url: `http://127.0.0.1:${port}`, pid: proc.pid };
}

/**
 * Fastify 5 + @fastify/http-proxy on the machine's Node, `npm install`ed once into
 * `bench/results/node_peer`; a string says why it could not be started.
 */
export async function startFastify(upstream: string): Promise<Target | string> {
  const dir = `${RESULTS_DIR}/node_peer`;
  await Deno.mkdir(dir, { recursive: true });
  try {
    await Deno.stat(`${dir}/node_modules/@fastify/http-proxy`);
  } catch {
    log("npm install fastify @fastify/http-proxy (into bench/results/node_peer)");
    await Deno.writeTextFile(`${dir}/package.json`, '{"name":"peer","private":true}');
    const install = await run("npm", [
      "install",
      "--no-audit",
      "--no-fund",
      "fastify@5",
      "@fastify/http-proxy@11",
    ], dir);
    if (!install.success) {
      return `npm install failed: ${decoder.decode(install.stderr).slice(-300)}`;
    }
  }
  await Deno.writeTextFile(
    `${dir}/server.mjs`,
    `import Fastify from "fastify";
import proxy from "@fastify/http-proxy";
const app = Fastify({ logger: false, bodyLimit: 200 * 1024 * 1024 });
await app.register(proxy, { upstream: process.argv[3] });
await app.listen({ host: "127.0.0.1", port: Number(process.argv[2]) });
`,
  );
  const port = freePort();
  const proc = spawn("fastify", ["node", `${dir}/server.mjs`, String(port), upstream], {
    logPath: `${dir}/server.log`,
    cwd: dir,
    cpus: proxyCpus(),
  });
  const version = decoder.decode((await run("node", ["--version"])).stdout).trim();
  return {
    name: `Fastify 5 + http-proxy (Node ${version})`,
    url: `http://127.0.0.1:${port}`,
    pid: proc.pid,
  };
}
