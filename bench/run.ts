/**
 * `deno task bench`: every Breakwater benchmark in one run, each figure as a ratio to a baseline
 * measured in the same run (the machine is noisy), written to `bench/RESULTS.md` and printed.
 *
 * 1. Proxy throughput and latency (wrk, 32 and 128 connections): direct upstream, nginx
 *    (keep-alive upstream, 1 worker), a bare Hono + pooled fetch proxy, Breakwater (access log
 *    off and on), Fastify + @fastify/http-proxy on the machine's Node.
 * 2. 100 MiB down and up through Breakwater vs direct (MB/s) and the gateway's peak RSS growth.
 * 3. Per-request costs: `deno bench --json` over the bench files.
 * 4. Fleet outage cost: N = 1, 3, 10 gateways, one shared KV file vs `:memory:` each.
 * 5. Propagation of an open breaker between processes sharing one KV file.
 *
 * Env knobs: BENCH_DURATION_S (wrk seconds per run, default 4), BENCH_REPS (default 3).
 * Every process it starts is stopped in a finally block.
 *
 * @module
 */

const ROOT = new URL("../", import.meta.url).pathname;
const RESULTS_DIR = `${ROOT}bench/results`;
const DURATION_S = Number(Deno.env.get("BENCH_DURATION_S") ?? 4);
const REPS = Number(Deno.env.get("BENCH_REPS") ?? 3);
const CONNECTIONS = [32, 128];
const decoder = new TextDecoder();
const startedAt = Date.now();

// ---------------------------------------------------------------------------------------------
// processes

interface Proc {
  name: string;
  pid: number;
  child: Deno.ChildProcess;
  stop(): Promise<void>;
}

const running = new Set<Proc>();

/** Spawns `args` with stdout+stderr sent to `logPath` (a file, or /dev/null). */
function spawn(
  name: string,
  args: string[],
  options: { logPath: string; env?: Record<string, string>; cwd?: string },
): Proc {
  const child = new Deno.Command("sh", {
    args: ["-c", `exec "$@" > '${options.logPath}' 2>&1`, "sh", ...args],
    env: options.env,
    cwd: options.cwd ?? ROOT,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const proc: Proc = {
    name,
    pid: child.pid,
    child,
    stop: async () => {
      if (!running.has(proc)) return;
      running.delete(proc);
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }, 5000);
      await child.status;
      clearTimeout(timer);
    },
  };
  running.add(proc);
  return proc;
}

async function stopAll(): Promise<void> {
  await Promise.all([...running].map((proc) => proc.stop()));
}

async function run(cmd: string, args: string[], cwd = ROOT): Promise<Deno.CommandOutput> {
  return await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
}

async function has(binary: string): Promise<boolean> {
  return (await run("sh", ["-c", `command -v ${binary}`])).success;
}

/** Ports handed out in this run: the OS may give a just-released port again, and two
 * gateways of one fleet on the same port made one instance silently missing. */
const handedOutPorts = new Set<number>();

function freePort(): number {
  for (;;) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    listener.close();
    if (handedOutPorts.has(port)) continue;
    handedOutPorts.add(port);
    return port;
  }
}

async function waitHttp(url: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const response = await fetch(url);
      await response.body?.cancel();
      if (response.status < 500) return;
    } catch { /* not yet */ }
    await sleep(100);
  }
  throw new Error(`${url} did not answer within ${timeoutMs} ms`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function median(all: number[]): number {
  const values = all.filter(Number.isFinite);
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

function log(message: string): void {
  const seconds = ((Date.now() - startedAt) / 1000).toFixed(0).padStart(4);
  console.error(`[bench ${seconds}s] ${message}`);
}

/** CPU seconds (user+system) of a process and its children, from /proc. */
async function cpuSeconds(pid: number): Promise<number> {
  const pids = [pid];
  const children = await run("pgrep", ["-P", String(pid)]);
  for (const line of decoder.decode(children.stdout).split("\n")) {
    if (line.trim()) pids.push(Number(line));
  }
  let ticks = 0;
  for (const each of pids) {
    try {
      const stat = Deno.readTextFileSync(`/proc/${each}/stat`);
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime
    } catch { /* exited */ }
  }
  return ticks / 100;
}

function procStatusKiB(pid: number, field: string): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const match = status.match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"));
  return match ? Number(match[1]) : NaN;
}

// ---------------------------------------------------------------------------------------------
// tools

interface Tools {
  wrk: boolean;
  nginx: boolean;
  curl: boolean;
  node: boolean;
  notes: string[];
}

async function ensureTools(): Promise<Tools> {
  const notes: string[] = [];
  const missing = [];
  if (!(await has("wrk"))) missing.push("wrk");
  if (!(await has("nginx"))) missing.push("nginx");
  if (!(await has("curl"))) missing.push("curl");
  if (missing.length > 0) {
    if (Deno.uid() === 0) {
      log(`installing ${missing.join(" ")} with apt-get`);
      await run("apt-get", ["install", "-y", ...missing]);
    } else {
      const note = `missing ${missing.join(", ")}: run \`sudo apt-get install -y ${
        missing.join(" ")
      }\`; those parts are skipped`;
      console.error(note);
      notes.push(note);
    }
  }
  return {
    wrk: await has("wrk"),
    nginx: await has("nginx"),
    curl: await has("curl"),
    node: await has("node") && await has("npm"),
    notes,
  };
}

// ---------------------------------------------------------------------------------------------
// wrk

interface WrkResult {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  errors: number;
  cpuUsPerRequest: number;
  /** Share of the machine's CPU used during the run by processes outside the test. */
  foreignCpuShare: number;
}

function toMs(text: string): number {
  const match = text.match(/^([\d.]+)(us|ms|s|m)$/);
  if (!match) return NaN;
  const value = Number(match[1]);
  return match[2] === "us"
    ? value / 1000
    : match[2] === "ms"
    ? value
    : match[2] === "s"
    ? value * 1000
    : value * 60_000;
}

/** Busy and total CPU ticks of the whole machine, from /proc/stat. */
function machineTicks(): { busy: number; total: number } {
  const fields = Deno.readTextFileSync("/proc/stat").split("\n")[0].trim().split(/\s+/).slice(1)
    .map(Number);
  const total = fields.slice(0, 8).reduce((sum, value) => sum + value, 0);
  return { busy: total - fields[3] - fields[4], total };
}

/**
 * Waits (up to `maxWaitMs`) until the machine is at least 85% idle over 300 ms: other work
 * (a test suite, say) would otherwise be measured as the proxy's slowness.
 */
async function waitQuiet(maxWaitMs = 8000): Promise<number> {
  const start = Date.now();
  while (Date.now() - start < maxWaitMs) {
    const before = machineTicks();
    await sleep(300);
    const after = machineTicks();
    const busy = (after.busy - before.busy) / Math.max(1, after.total - before.total);
    if (busy <= 0.15) break;
  }
  return Date.now() - start;
}

async function wrk(
  url: string,
  connections: number,
  durationS: number,
  proxyPid: number | null,
  otherPids: number[] = [],
): Promise<WrkResult> {
  const of = async (pids: number[]) => {
    let seconds = 0;
    for (const pid of pids) seconds += await cpuSeconds(pid);
    return seconds;
  };
  const proxyPids = proxyPid === null ? [] : [proxyPid];
  const cpuBefore = await of(proxyPids);
  const otherBefore = await of(otherPids);
  const ticksBefore = machineTicks();
  // sh reports wrk's CPU (its waited children's cutime+cstime) once wrk has exited.
  const output = await run("sh", [
    "-c",
    'wrk "$@"; echo; cat /proc/$$/stat',
    "sh",
    "-t2",
    `-c${connections}`,
    `-d${durationS}s`,
    "--latency",
    url,
  ]);
  const ticksAfter = machineTicks();
  const cpuAfter = await of(proxyPids);
  const otherAfter = await of(otherPids);
  const text = decoder.decode(output.stdout);
  const shStat = text.trim().split("\n").at(-1) ?? "";
  const shFields = shStat.slice(shStat.lastIndexOf(")") + 2).split(" ");
  const wrkSeconds = (Number(shFields[13]) + Number(shFields[14])) / 100;
  const machineSeconds = (ticksAfter.busy - ticksBefore.busy) / 100;
  const capacitySeconds = (ticksAfter.total - ticksBefore.total) / 100;
  const rps = Number(text.match(/Requests\/sec:\s+([\d.]+)/)?.[1] ?? NaN);
  const requests = Number(text.match(/(\d+) requests in/)?.[1] ?? NaN);
  const non2xx = Number(text.match(/Non-2xx or 3xx responses: (\d+)/)?.[1] ?? 0);
  const socketErrors = text.match(
    /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/,
  );
  const errors = non2xx +
    (socketErrors ? socketErrors.slice(1).reduce((sum, value) => sum + Number(value), 0) : 0);
  const result = {
    rps,
    // Anchored: "91.50%" in the thread-stats columns must not match.
    p50Ms: toMs(text.match(/^\s+50%\s+(\S+)/m)?.[1] ?? ""),
    p99Ms: toMs(text.match(/^\s+99%\s+(\S+)/m)?.[1] ?? ""),
    requests,
    errors,
    cpuUsPerRequest: proxyPid === null ? NaN : (cpuAfter - cpuBefore) * 1e6 / requests,
    foreignCpuShare: Math.max(
      0,
      (machineSeconds - (cpuAfter - cpuBefore) - (otherAfter - otherBefore) - wrkSeconds) /
        capacitySeconds,
    ),
  };
  if (![result.p50Ms, result.p99Ms, result.rps].every(Number.isFinite)) {
    await Deno.writeTextFile(`${RESULTS_DIR}/wrk-unparsed.log`, `${url}\n${text}\n`, {
      append: true,
    });
  }
  return result;
}

/** A look at the KV's SQLite files around one successful-traffic wrk run. */
interface KvWriteCheck {
  requests: number;
  /** Growth of the `-wal` file in bytes (SQLite appends every commit to it). */
  walBytes: number;
  /** True when the database or its WAL was modified during the run. */
  changed: boolean;
}

const kvWriteChecks: KvWriteCheck[] = [];

function kvFiles(path: string): { walBytes: number; walMtime: number; dbMtime: number } {
  const stat = (file: string) => {
    try {
      const info = Deno.statSync(file);
      return { size: info.size, mtime: info.mtime?.getTime() ?? 0 };
    } catch {
      return { size: 0, mtime: 0 };
    }
  };
  const wal = stat(`${path}-wal`);
  return { walBytes: wal.size, walMtime: wal.mtime, dbMtime: stat(path).mtime };
}

// ---------------------------------------------------------------------------------------------
// the targets

interface Target {
  name: string;
  url: string;
  pid: number;
}

function gatewayArgs(dir: string, configPath: string, denoFlags: string[] = []): string[] {
  return [
    Deno.execPath(),
    "run",
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

interface GatewayOptions {
  name: string;
  dir: string;
  services: Record<string, unknown>;
  kvPath: string;
  logLevel: string;
  logPath: string;
  extraEnv?: Record<string, string>;
  kvSyncMs?: number;
  denoFlags?: string[];
}

async function startGateway(options: GatewayOptions): Promise<Target & { adminUrl: string }> {
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
    }),
  );
  const proc = spawn(options.name, gatewayArgs(options.dir, configPath, options.denoFlags), {
    logPath: options.logPath,
    env: { BREAKWATER_LOG_LEVEL: options.logLevel, ...options.extraEnv },
  });
  return {
    name: options.name,
    url: `http://127.0.0.1:${port}`,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    pid: proc.pid,
  };
}

async function startNginx(dir: string, upstreamPort: number): Promise<Target> {
  const port = freePort();
  const prefix = `${dir}/nginx`;
  await Deno.mkdir(prefix, { recursive: true });
  const conf = `${prefix}/nginx.conf`;
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
  client_max_body_size 0;
  upstream bench_upstream { server 127.0.0.1:${upstreamPort}; keepalive 32; }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://bench_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering off;
      proxy_buffering off;
    }
  }
}
`,
  );
  const proc = spawn("nginx", [
    "nginx",
    "-p",
    prefix,
    "-e",
    `${prefix}/error.log`,
    "-c",
    conf,
    "-g",
    "daemon off;",
  ], { logPath: `${prefix}/stdout.log` });
  return { name: "nginx", url: `http://127.0.0.1:${port}`, pid: proc.pid };
}

async function startFastify(upstream: string): Promise<Target | string> {
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
  });
  const version = decoder.decode((await run("node", ["--version"])).stdout).trim();
  return {
    name: `Fastify 5 + http-proxy (Node ${version})`,
    url: `http://127.0.0.1:${port}`,
    pid: proc.pid,
  };
}

// ---------------------------------------------------------------------------------------------
// 1 + 2: throughput and large bodies

interface ThroughputRow {
  target: string;
  connections: number;
  runs: WrkResult[];
}

interface BodyRow {
  target: string;
  downMBs: number;
  upMBs: number;
  rssBeforeMiB: number;
  downGrowthMiB: number;
  upGrowthMiB: number;
}

async function curlSpeed(args: string[]): Promise<number> {
  const output = await run("curl", ["-s", "-o", "/dev/null", "-H", "Expect:", ...args]);
  const [speed, status] = decoder.decode(output.stdout).trim().split(" ");
  if (status !== "200") throw new Error(`curl ${args.join(" ")}: status ${status}`);
  return Number(speed) / 1e6;
}

function resetPeak(pid: number): void {
  Deno.writeTextFileSync(`/proc/${pid}/clear_refs`, "5");
}

async function measureBodies(target: Target, dir: string, isDirect: boolean): Promise<BodyRow> {
  // nginx's worker is a child of the pid we know, and direct has no proxy: no RSS for those.
  const file = `${dir}/upload.bin`;
  const down: number[] = [];
  const up: number[] = [];
  const rssBefore = isDirect ? NaN : procStatusKiB(target.pid, "VmRSS");
  let downGrowth = NaN;
  let upGrowth = NaN;
  if (!isDirect) resetPeak(target.pid);
  for (let rep = 0; rep < REPS; rep++) {
    down.push(await curlSpeed(["-w", "%{speed_download} %{http_code}", `${target.url}/big`]));
  }
  if (!isDirect) {
    downGrowth = (procStatusKiB(target.pid, "VmHWM") - rssBefore) / 1024;
    resetPeak(target.pid);
  }
  const rssBeforeUp = isDirect ? NaN : procStatusKiB(target.pid, "VmRSS");
  for (let rep = 0; rep < REPS; rep++) {
    up.push(
      await curlSpeed(["-w", "%{speed_upload} %{http_code}", "-T", file, `${target.url}/upload`]),
    );
  }
  if (!isDirect) upGrowth = (procStatusKiB(target.pid, "VmHWM") - rssBeforeUp) / 1024;
  return {
    target: target.name,
    downMBs: median(down),
    upMBs: median(up),
    rssBeforeMiB: rssBefore / 1024,
    downGrowthMiB: downGrowth,
    upGrowthMiB: upGrowth,
  };
}

async function throughputAndBodies(
  tools: Tools,
  dir: string,
  notes: string[],
): Promise<{ rows: ThroughputRow[]; bodies: BodyRow[]; profile: ProfileRow[] }> {
  const rows: ThroughputRow[] = [];
  const bodies: BodyRow[] = [];
  let profile: ProfileRow[] = [];
  if (!tools.wrk) {
    notes.push("wrk missing: throughput skipped");
    return { rows, bodies, profile };
  }
  const upstreamPort = freePort();
  const upstreamProc = spawn("upstream", [
    Deno.execPath(),
    "run",
    "--allow-net",
    `${ROOT}bench/upstream.ts`,
    String(upstreamPort),
  ], { logPath: `${dir}/upstream.log` });
  const upstream = `http://127.0.0.1:${upstreamPort}`;
  await waitHttp(`${upstream}/`);

  const targets: Target[] = [{ name: "direct (Deno.serve upstream)", url: upstream, pid: -1 }];
  if (tools.nginx) targets.push(await startNginx(dir, upstreamPort));
  else notes.push("nginx missing: nginx baseline skipped");

  const barePort = freePort();
  const bare = spawn("bare", [
    Deno.execPath(),
    "run",
    `--config=${ROOT}deno.json`,
    "--allow-net",
    `${ROOT}bench/bare_proxy.ts`,
    String(barePort),
    upstream,
  ], { logPath: `${dir}/bare.log` });
  targets.push({
    name: "bare Hono + pooled fetch",
    url: `http://127.0.0.1:${barePort}`,
    pid: bare.pid,
  });

  const services = {
    api: {
      prefix: "/",
      upstreams: [upstream],
      pool: { maxConnections: 256, maxPending: 4096 },
    },
  };
  targets.push(
    await startGateway({
      name: "Breakwater (all on, access log off)",
      dir,
      services,
      kvPath: `${dir}/throughput.kv`,
      logLevel: "warn",
      logPath: `${dir}/gateway-warn.log`,
    }),
  );
  targets.push(
    await startGateway({
      name: "Breakwater (all on, access log on)",
      dir,
      services,
      kvPath: `${dir}/throughput-info.kv`,
      logLevel: "info",
      logPath: "/dev/null",
    }),
  );
  targets.push(
    await startGateway({
      name: "Breakwater (http1 client, log off)",
      dir,
      services: { api: { ...services.api, upstreamClient: "http1" } },
      kvPath: `${dir}/throughput-http1.kv`,
      logLevel: "warn",
      logPath: `${dir}/gateway-http1.log`,
    }),
  );
  if (tools.node) {
    const fastify = await startFastify(upstream);
    if (typeof fastify === "string") notes.push(`Node peer skipped: ${fastify}`);
    else targets.push(fastify);
  } else notes.push("node/npm missing: Node peer skipped");

  for (const target of targets) await waitHttp(`${target.url}/`);
  if (targets[0].pid === -1) targets[0].pid = upstreamProc.pid;

  // Warm every target (JIT, pools), then interleave targets within each repetition so drift
  // on the noisy machine spreads over all of them.
  for (const target of targets) await wrk(`${target.url}/item`, 32, 1, null);
  for (const connections of CONNECTIONS) {
    for (const target of targets) rows.push({ target: target.name, connections, runs: [] });
  }
  for (let rep = 0; rep < REPS; rep++) {
    for (const connections of CONNECTIONS) {
      for (const target of targets) {
        const isDirect = target.pid === upstreamProc.pid;
        const others = isDirect ? [] : [upstreamProc.pid];
        let result: WrkResult | undefined;
        // One retry when something outside the test took over 15% of the machine.
        for (let attempt = 0; attempt < 2; attempt++) {
          const waitedMs = await waitQuiet();
          if (waitedMs > 1000) log(`waited ${waitedMs} ms for a quiet machine`);
          const kvPath = `${dir}/throughput.kv`;
          const watchKv = target.name.includes("access log off");
          // A missing file would read as "unchanged": only count runs where the KV file exists.
          const kvBefore = watchKv && kvFiles(kvPath).dbMtime > 0 ? kvFiles(kvPath) : null;
          result = await wrk(`${target.url}/item`, connections, DURATION_S, target.pid, others);
          if (kvBefore) {
            const kvAfter = kvFiles(kvPath);
            kvWriteChecks.push({
              requests: result.requests,
              walBytes: kvAfter.walBytes - kvBefore.walBytes,
              changed: kvAfter.walMtime !== kvBefore.walMtime ||
                kvAfter.dbMtime !== kvBefore.dbMtime,
            });
          }
          if (result.foreignCpuShare <= 0.15) break;
          log(`foreign CPU ${(100 * result.foreignCpuShare).toFixed(0)}%: repeating`);
        }
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

  if (tools.curl) {
    log("large bodies");
    const file = await Deno.open(`${dir}/upload.bin`, { write: true, create: true });
    const chunk = new Uint8Array(1024 * 1024).fill(97);
    for (let index = 0; index < 100; index++) await file.write(chunk);
    file.close();
    const bodyTargets = targets.filter((target) =>
      target.pid === upstreamProc.pid || target.name.startsWith("bare") ||
      target.name.includes("access log off") || target.name === "nginx"
    );
    for (const target of bodyTargets) {
      bodies.push(
        await measureBodies(
          target,
          dir,
          target.pid === upstreamProc.pid || target.name === "nginx",
        ),
      );
      log(`bodies ${target.name}: ${JSON.stringify(bodies.at(-1))}`);
    }
  } else notes.push("curl missing: large bodies skipped");
  // Everything but the upstream stops: profile one more Breakwater under the same load.
  for (const proc of [...running]) {
    if (proc === upstreamProc) continue;
    await proc.stop();
    if (Deno.env.get("BENCH_DEBUG")) {
      const alive = await fetch(`${upstream}/item`).then((r) => r.text()).catch((e) => String(e));
      log(`after stopping ${proc.name}: upstream ${alive.slice(0, 30)}`);
    }
  }
  try {
    const probe = await fetch(`${upstream}/item`).then(async (response) => {
      await response.body?.cancel();
      return response.status;
    }, (error) => String(error));
    log(`upstream before profiling: ${probe}`);
    profile = await profileGateway(dir, services);
  } catch (error) {
    notes.push(`profile failed: ${error}`);
  }
  await stopAll();
  return { rows, bodies, profile };
}

interface ProfileRow {
  kind: "self" | "inclusive";
  frame: string;
  /** Share of the non-idle samples. */
  percent: number;
}

/**
 * Runs Breakwater (access log off) with `--cpu-prof` under wrk -c32 and summarises the
 * profile: top frames by self time and the request path's own functions by inclusive time,
 * as shares of the samples where the main thread was not idle.
 */
async function profileGateway(
  dir: string,
  services: Record<string, unknown>,
): Promise<ProfileRow[]> {
  log("profiling Breakwater under wrk -c32");
  const profileDir = `${dir}/profile`;
  const gateway = await startGateway({
    name: "profiled",
    dir,
    services,
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
  for (const proc of [...running]) if (proc.pid === gateway.pid) await proc.stop();
  let file = "";
  for await (const entry of Deno.readDir(profileDir)) file = `${profileDir}/${entry.name}`;
  const profile = JSON.parse(await Deno.readTextFile(file)) as {
    nodes: {
      id: number;
      callFrame: { functionName: string; url: string; lineNumber: number };
      children?: number[];
    }[];
    samples: number[];
  };
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) {
    for (const child of node.children ?? []) parent.set(child, node.id);
  }
  const name = (id: number) => {
    const frame = byId.get(id)!.callFrame;
    const where = frame.url.replace(/^.*\/(src|node_modules\/\.deno)\//, "$1/")
      .replace(/^.*\/(hono|@opentelemetry)/, "$1").replace(/^file:\/\//, "");
    return `${frame.functionName || "(anonymous)"}${
      where ? ` ${where}:${frame.lineNumber + 1}` : ""
    }`;
  };
  const counts = new Map<number, number>();
  for (const sample of profile.samples) counts.set(sample, (counts.get(sample) ?? 0) + 1);
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let busy = 0;
  for (const [id, count] of counts) {
    const key = name(id);
    if (key === "(idle)") continue;
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
  const idle = [...counts].filter(([id]) => name(id) === "(idle)").reduce(
    (sum, [, c]) => sum + c,
    0,
  );
  rows.push({
    kind: "self",
    frame: "(main thread idle, share of all samples)",
    percent: 100 * idle / profile.samples.length,
  });
  return rows;
}

// ---------------------------------------------------------------------------------------------
// 3: deno bench

interface MicroRow {
  file: string;
  name: string;
  avgNs: number;
  p99Ns: number;
}

async function microBenches(notes: string[]): Promise<MicroRow[]> {
  const rows: MicroRow[] = [];
  for (const file of ["breaker_bench.ts", "telemetry_bench.ts", "request_path_bench.ts"]) {
    await waitQuiet();
    log(`deno bench ${file}`);
    const output = await run(Deno.execPath(), ["bench", "--json", "-A", `bench/${file}`]);
    try {
      const report = JSON.parse(decoder.decode(output.stdout));
      for (const bench of report.benches) {
        const ok = bench.results[0]?.ok;
        if (!ok) continue;
        rows.push({ file, name: bench.name, avgNs: ok.avg, p99Ns: ok.p99 });
      }
    } catch {
      notes.push(
        `deno bench ${file} failed: ${decoder.decode(output.stderr).slice(-300).trim()}`,
      );
    }
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
// 4 + 5: the fleet

const FLEET_MODES = [
  "shared KV file",
  "per-instance :memory:",
  "shared KV file, syncIntervalMs 50",
] as const;
type FleetMode = typeof FLEET_MODES[number];

interface FleetRow {
  mode: FleetMode;
  instances: number;
  /** Requests per second the load generator sends to each loaded instance. */
  ratePerS: number;
  failedCalls: number[];
  probes: number[];
  allRejectMs: number[];
}

interface PropagationRow {
  mode: FleetMode;
  rep: number;
  lagsMs: number[];
}

const RECOVERY_MS = 2000;
/** Instances under load and the request rate each receives. */
const FLEET_SCENARIOS = [
  { size: 1, rate: 50 },
  { size: 3, rate: 50 },
  { size: 10, rate: 50 },
  { size: 10, rate: 10 },
];
const FAILURE_THRESHOLD = 5;

/** The in-runner upstream for the fleet: healthy or dark (503), logs every request's time. */
function fleetUpstream() {
  const state = { dark: false, received: [] as { atMs: number; path: string; dark: boolean }[] };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const path = new URL(request.url).pathname;
    state.received.push({ atMs: performance.now(), path, dark: state.dark });
    if (state.dark) return new Response("dark", { status: 503 });
    return Response.json({ ok: true });
  });
  return { state, server, origin: `http://127.0.0.1:${server.addr.port}` };
}

/**
 * Sends ~`ratePerS` requests/s to one instance with at most 4 in flight; records the first
 * breaker_open answer after `armedAt`.
 */
function loadInstance(url: string, ratePerS: number) {
  const control = { stop: false, armedAt: Infinity, firstOpenAt: Infinity, inFlight: 0 };
  const done = (async () => {
    const intervalMs = 1000 / ratePerS;
    let next = performance.now();
    while (!control.stop) {
      next += intervalMs;
      if (control.inFlight < 4) {
        control.inFlight++;
        const sentAt = performance.now();
        fetch(url).then(async (response) => {
          await response.body?.cancel();
          if (
            response.headers.get("x-breakwater-error") === "breaker_open" &&
            sentAt >= control.armedAt && control.firstOpenAt === Infinity
          ) control.firstOpenAt = performance.now();
        }).catch(() => {}).finally(() => control.inFlight--);
      }
      await sleep(Math.max(0, next - performance.now()));
    }
    while (control.inFlight > 0) await sleep(5);
  })();
  return { control, done };
}

async function startFleet(
  dir: string,
  mode: FleetRow["mode"],
  size: number,
  services: Record<string, unknown>,
) {
  const gateways = [];
  for (let index = 0; index < size; index++) {
    gateways.push(
      await startGateway({
        name: `fleet-${FLEET_MODES.indexOf(mode)}-${index}`,
        dir,
        services,
        kvPath: mode.startsWith("shared")
          ? `${dir}/fleet-${FLEET_MODES.indexOf(mode)}.kv`
          : ":memory:",
        kvSyncMs: mode.endsWith("50") ? 50 : undefined,
        logLevel: "warn",
        logPath: `${dir}/fleet-${index}.log`,
      }),
    );
  }
  await Promise.all(gateways.map((gateway) => waitHttp(`${gateway.url}/healthz`, 60_000)));
  return gateways;
}

async function fleetOutage(dir: string): Promise<{
  rows: FleetRow[];
  propagation: PropagationRow[];
}> {
  const upstream = fleetUpstream();
  const rows: FleetRow[] = [];
  const propagation: PropagationRow[] = [];
  const scenarios = FLEET_SCENARIOS;
  const services: Record<string, unknown> = {};
  const breaker = {
    failureThreshold: FAILURE_THRESHOLD,
    windowMs: 10_000,
    recoveryTimeoutMs: RECOVERY_MS,
    halfOpenProbes: 1,
  };
  // One service (own breaker) per scenario, so the fleet is started once per mode.
  for (const { size, rate } of scenarios) {
    for (let rep = 0; rep < REPS; rep++) {
      services[`n${size}q${rate}r${rep}`] = {
        prefix: `/n${size}q${rate}r${rep}`,
        upstreams: [upstream.origin],
        breaker,
      };
    }
  }
  for (let rep = 0; rep < REPS; rep++) {
    services[`prop${rep}`] = { prefix: `/prop${rep}`, upstreams: [upstream.origin], breaker };
  }
  try {
    for (const mode of FLEET_MODES) {
      log(`fleet: starting 10 gateways (${mode})`);
      const gateways = await startFleet(dir, mode, 10, services);
      for (const { size, rate } of scenarios) {
        const row: FleetRow = {
          mode,
          instances: size,
          ratePerS: rate,
          failedCalls: [],
          probes: [],
          allRejectMs: [],
        };
        rows.push(row);
        for (let rep = 0; rep < REPS; rep++) {
          const service = `n${size}q${rate}r${rep}`;
          const loads = gateways.slice(0, size).map((gateway) =>
            loadInstance(`${gateway.url}/${service}/x`, rate)
          );
          await sleep(1500);
          const darkAt = performance.now();
          upstream.state.dark = true;
          for (const load of loads) load.control.armedAt = darkAt;
          const deadline = darkAt + 10_000;
          while (
            performance.now() < deadline &&
            loads.some((load) => load.control.firstOpenAt === Infinity)
          ) await sleep(5);
          const allOpenAt = Math.max(...loads.map((load) => load.control.firstOpenAt));
          const firstOpenAt = Math.min(...loads.map((load) => load.control.firstOpenAt));
          await sleep(Math.max(0, firstOpenAt + RECOVERY_MS + 1200 - performance.now()));
          for (const load of loads) load.control.stop = true;
          await Promise.all(loads.map((load) => load.done));
          upstream.state.dark = false;
          const mine = upstream.state.received.filter((entry) =>
            entry.path.startsWith(`/${service}/`) && entry.dark && entry.atMs >= darkAt
          );
          const failed = mine.filter((entry) => entry.atMs <= allOpenAt).length;
          const probes = mine.filter((entry) => entry.atMs > allOpenAt).length;
          row.failedCalls.push(failed);
          row.probes.push(probes);
          row.allRejectMs.push(allOpenAt - darkAt);
          log(
            `fleet ${mode} N=${size} @${rate}/s rep ${
              rep + 1
            }: failed ${failed}, probes ${probes}, all rejecting after ${
              (allOpenAt - darkAt).toFixed(0)
            } ms`,
          );
        }
      }
      if (mode.startsWith("shared")) {
        for (let rep = 0; rep < REPS; rep++) {
          propagation.push(await propagate(gateways, upstream, `prop${rep}`, rep, mode));
        }
      }
      await stopAll();
    }
  } finally {
    await stopAll();
    await upstream.server.shutdown();
  }
  return { rows, propagation };
}

/**
 * Load on instance 0 only; the other instances are watched on their admin API every 20 ms.
 * Lag = when each watcher first reports `open` minus when instance 0 first answered
 * breaker_open.
 */
async function propagate(
  gateways: (Target & { adminUrl: string })[],
  upstream: ReturnType<typeof fleetUpstream>,
  service: string,
  rep: number,
  mode: FleetMode,
): Promise<PropagationRow> {
  const load = loadInstance(`${gateways[0].url}/${service}/x`, 200);
  await sleep(500);
  const darkAt = performance.now();
  upstream.state.dark = true;
  load.control.armedAt = darkAt;
  const seenOpen = new Array<number>(gateways.length).fill(Infinity);
  const deadline = darkAt + 8000;
  while (performance.now() < deadline && seenOpen.slice(1).some((at) => at === Infinity)) {
    await Promise.all(
      gateways.slice(1).map(async (gateway, index) => {
        if (seenOpen[index + 1] !== Infinity) return;
        try {
          const view = await (await fetch(`${gateway.adminUrl}/admin/breakers`)).json();
          const entry = view.services.find((each: { service: string }) => each.service === service);
          if (entry?.state === "open") seenOpen[index + 1] = performance.now();
        } catch { /* retry */ }
      }),
    );
    await sleep(20);
  }
  load.control.stop = true;
  await load.done;
  upstream.state.dark = false;
  const tripAt = load.control.firstOpenAt;
  const lags = seenOpen.slice(1).map((at) => at - tripAt);
  log(
    `propagation ${mode} rep ${rep + 1}: lags ${lags.map((lag) => lag.toFixed(0)).join(", ")} ms`,
  );
  return { mode, rep, lagsMs: lags };
}

// ---------------------------------------------------------------------------------------------
// report

function fmt(value: number, digits = 0): string {
  if (!Number.isFinite(value)) return "n/a";
  return value.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

async function machine(): Promise<string> {
  const cpu = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? "?";
  const nproc = decoder.decode((await run("nproc", [])).stdout).trim();
  const memory = Deno.readTextFileSync("/proc/meminfo").match(/MemTotal:\s+(\d+)/)?.[1];
  return `${nproc} cores (nproc), ${cpu}, ${
    fmt(Number(memory) / 1024 / 1024, 1)
  } GiB RAM, Deno ${Deno.version.deno} (V8 ${Deno.version.v8}), ${Deno.build.os}/${Deno.build.arch}`;
}

/** The issue's targets, each with the figure measured in this run. */
function targetsSection(
  throughput: ThroughputRow[],
  bodies: BodyRow[],
  micro: MicroRow[],
  fleet: FleetRow[],
  propagation: PropagationRow[],
): string[] {
  const lines = ["## Targets", "", "| target | measured | verdict |", "| --- | --- | --- |"];
  const verdict = (ok: boolean | null) => ok === null ? "n/a" : ok ? "met" : "**missed**";
  const add = (target: string, measured: string, ok: boolean | null) =>
    lines.push(`| ${target} | ${measured} | ${verdict(ok)} |`);
  for (const connections of CONNECTIONS) {
    const rows = throughput.filter((row) => row.connections === connections);
    const pick = (test: (name: string) => boolean) => rows.find((row) => test(row.target));
    const rps = (row?: ThroughputRow) => median(row?.runs.map((run) => run.rps) ?? []);
    const p99 = (row?: ThroughputRow) => median(row?.runs.map((run) => run.p99Ms) ?? []);
    const gateway = pick((name) => name.includes("access log off"));
    const gatewayLog = pick((name) => name.includes("access log on"));
    const nginx = pick((name) => name === "nginx");
    const bare = pick((name) => name.startsWith("bare"));
    const node = pick((name) => name.startsWith("Fastify"));
    if (!gateway) continue;
    const c = `c${connections}`;
    if (nginx) {
      const ratio = rps(gateway) / rps(nginx);
      add(
        `${c}: req/s >= 0.5x nginx`,
        `${fmt(ratio, 2)}x (log on: ${fmt(rps(gatewayLog) / rps(nginx), 2)}x)`,
        ratio >= 0.5,
      );
      const p99Ratio = p99(gateway) / p99(nginx);
      add(`${c}: p99 <= 2x nginx`, `${fmt(p99Ratio, 2)}x`, p99Ratio <= 2);
    }
    if (bare) {
      const ratio = rps(gateway) / rps(bare);
      add(
        `${c}: req/s >= 0.95x bare pooled Hono proxy`,
        `${fmt(ratio, 2)}x (log on: ${fmt(rps(gatewayLog) / rps(bare), 2)}x)`,
        ratio >= 0.95,
      );
    }
    if (node) {
      const ratio = rps(gateway) / rps(node);
      add(`${c}: ahead of the Node peer (Fastify)`, `${fmt(ratio, 2)}x`, ratio > 1);
    }
  }
  const admits = micro.filter((row) => row.name.startsWith("admit:"));
  if (admits.length > 0) {
    const worst = Math.max(...admits.map((row) => row.avgNs));
    add("admission < 1 us", `worst admit bench ${fmt(worst, 1)} ns`, worst < 1000);
  }
  if (kvWriteChecks.length > 0) {
    const requests = kvWriteChecks.reduce((sum, check) => sum + check.requests, 0);
    const changed = kvWriteChecks.filter((check) => check.changed).length;
    const walBytes = kvWriteChecks.reduce((sum, check) => sum + Math.max(0, check.walBytes), 0);
    add(
      "zero KV writes per successful request",
      `${fmt(requests)} successful requests over ${kvWriteChecks.length} runs: KV file or WAL ` +
        `modified in ${changed} runs, WAL grew ${fmt(walBytes)} bytes`,
      changed === 0 ? true : walBytes / requests < 1,
    );
  }
  const shared = fleet.filter((row) => row.mode === "shared KV file");
  if (shared.length > 0) {
    const worst = Math.max(...shared.flatMap((row) => row.failedCalls));
    add(
      `fleet outage: failed calls <= ${FAILURE_THRESHOLD + 3} for every N`,
      shared.map((row) => `N=${row.instances}@${row.ratePerS}/s: ${fmt(median(row.failedCalls))}`)
        .join(", "),
      worst <= FAILURE_THRESHOLD + 3,
    );
  }
  const defaultSync = propagation.filter((row) => row.mode === "shared KV file");
  if (defaultSync.length > 0) {
    const worst = Math.max(...defaultSync.flatMap((row) => row.lagsMs));
    add("propagation < 1 s on a shared file", `max ${fmt(worst)} ms`, worst < 1000);
  }
  const gatewayBodies = bodies.find((row) => row.target.includes("access log off"));
  if (gatewayBodies) {
    const worst = Math.max(gatewayBodies.downGrowthMiB, gatewayBodies.upGrowthMiB);
    add(
      "100 MiB through the gateway: RSS growth < 8 MiB",
      `down ${fmt(gatewayBodies.downGrowthMiB, 1)} MiB, up ${
        fmt(gatewayBodies.upGrowthMiB, 1)
      } MiB`,
      worst < 8,
    );
  }
  lines.push("");
  return lines;
}

function report(
  info: { machine: string; durationS: number },
  throughput: ThroughputRow[],
  bodies: BodyRow[],
  micro: MicroRow[],
  fleet: FleetRow[],
  propagation: PropagationRow[],
  profile: ProfileRow[],
  notes: string[],
): string {
  const lines: string[] = [];
  const date = new Date().toISOString().slice(0, 16).replace("T", " ");
  lines.push("# Breakwater benchmark results", "");
  lines.push(`- Date: ${date} UTC`);
  lines.push(`- Machine: ${info.machine}`);
  lines.push(
    `- Command: \`deno task bench\` (bench/run.ts), whole run ${fmt(info.durationS)} s. ` +
      `Medians of ${REPS} repetitions; every ratio is against a baseline from this same run.`,
  );
  lines.push("");

  lines.push(...targetsSection(throughput, bodies, micro, fleet, propagation));
  lines.push("## Fleet outage cost (the headline)", "");
  lines.push(
    `The upstream turns dark (every call answers 503) while a load generator sends the given ` +
      `rate to each of N gateway processes (failureThreshold ${FAILURE_THRESHOLD}, recoveryTimeoutMs ${RECOVERY_MS}, ` +
      "halfOpenProbes 1). Counted on the upstream: failed calls it received until every " +
      "instance answered `breaker_open`, and probes it received in the first half-open round " +
      "(the upstream is still dark). Median (min-max) over the repetitions.",
    "",
  );
  lines.push(
    "| instances | req/s each | breakers | failed calls | target <= threshold+3 | probes at recovery | all instances rejecting after |",
  );
  lines.push("| ---: | ---: | --- | ---: | --- | ---: | ---: |");
  const range = (values: number[]) =>
    `${fmt(median(values))} (${fmt(Math.min(...values))}-${fmt(Math.max(...values))})`;
  for (const { size, rate } of FLEET_SCENARIOS) {
    for (const mode of FLEET_MODES) {
      const row = fleet.find((each) =>
        each.instances === size && each.ratePerS === rate && each.mode === mode
      );
      if (!row) continue;
      const met = mode.startsWith("shared")
        ? (Math.max(...row.failedCalls) <= FAILURE_THRESHOLD + 3 ? "met" : "missed")
        : "(baseline)";
      lines.push(
        `| ${size} | ${rate} | ${mode} | ${range(row.failedCalls)} | ${met} | ${
          range(row.probes)
        } | ${fmt(median(row.allRejectMs))} ms |`,
      );
    }
  }
  lines.push("");
  lines.push(
    "All 10 processes run in both modes; for N < 10 only the first N receive traffic (each " +
      "scenario uses its own service, so its own fresh breaker).",
    "",
  );

  if (propagation.length > 0) {
    lines.push("## Propagation over a shared KV file", "");
    lines.push(
      "Load on instance 0 only; the 9 other instances are polled on `/admin/breakers` every " +
        "~20 ms. Lag = first `open` seen on a watcher minus instance 0's first `breaker_open` " +
        "answer. Target: < 1 s.",
      "",
    );
    lines.push("| KV | repetition | median lag | max lag |");
    lines.push("| --- | ---: | ---: | ---: |");
    for (const row of propagation) {
      lines.push(
        `| ${row.mode} | ${row.rep + 1} | ${fmt(median(row.lagsMs))} ms | ${
          fmt(Math.max(...row.lagsMs))
        } ms |`,
      );
    }
    lines.push("");
  }

  if (throughput.length > 0) {
    lines.push("## Proxy throughput and latency", "");
    lines.push(
      `wrk -t2, ${DURATION_S} s per run, ~100-byte JSON from a Deno.serve upstream process on ` +
        "loopback; all processes share the 2 cores with wrk. CPU us/req = the proxy's own " +
        "user+system CPU time per request (for direct: the upstream's).",
      "",
    );
    for (const connections of CONNECTIONS) {
      const rows = throughput.filter((row) => row.connections === connections);
      const direct = rows.find((row) => row.target.startsWith("direct"));
      const nginx = rows.find((row) => row.target === "nginx");
      const bare = rows.find((row) => row.target.startsWith("bare"));
      const rps = (row?: ThroughputRow) => median(row?.runs.map((run) => run.rps) ?? []);
      const p99 = (row?: ThroughputRow) => median(row?.runs.map((run) => run.p99Ms) ?? []);
      lines.push(`### ${connections} connections`, "");
      lines.push(
        "| target | req/s | x direct | x nginx | x bare | p50 ms | p99 ms | p99 x nginx | CPU us/req | errors | foreign CPU |",
      );
      lines.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
      for (const row of rows) {
        const value = rps(row);
        lines.push(
          `| ${row.target} | ${fmt(value)} | ${fmt(value / rps(direct), 2)} | ${
            fmt(value / rps(nginx), 2)
          } | ${fmt(value / rps(bare), 2)} | ${
            fmt(median(row.runs.map((run) => run.p50Ms)), 2)
          } | ${fmt(p99(row), 2)} | ${fmt(p99(row) / p99(nginx), 2)} | ${
            fmt(median(row.runs.map((run) => run.cpuUsPerRequest)), 1)
          } | ${row.runs.reduce((sum, run) => sum + run.errors, 0)} | ${
            fmt(100 * median(row.runs.map((run) => run.foreignCpuShare)))
          }% |`,
        );
      }
      lines.push("");
    }
  }

  if (bodies.length > 0) {
    lines.push("## Large bodies (100 MiB)", "");
    lines.push(
      "curl, median of the repetitions. RSS growth = peak RSS (VmHWM, reset via " +
        "/proc/PID/clear_refs before each direction) minus RSS before. Target: < 8 MiB.",
      "",
    );
    const direct = bodies.find((row) => row.target.startsWith("direct"));
    lines.push(
      "| target | download MB/s | x direct | upload MB/s | x direct | RSS before MiB | peak growth down MiB | peak growth up MiB |",
    );
    lines.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (const row of bodies) {
      lines.push(
        `| ${row.target} | ${fmt(row.downMBs)} | ${fmt(row.downMBs / direct!.downMBs, 2)} | ${
          fmt(row.upMBs)
        } | ${fmt(row.upMBs / direct!.upMBs, 2)} | ${fmt(row.rssBeforeMiB, 1)} | ${
          fmt(row.downGrowthMiB, 1)
        } | ${fmt(row.upGrowthMiB, 1)} |`,
      );
    }
    lines.push("");
  }

  if (profile.length > 0) {
    lines.push("## Where Breakwater's CPU goes (--cpu-prof under wrk -c32)", "");
    lines.push(
      "Shares of the main thread's non-idle samples. Self = time in the frame itself (ops " +
        "such as `op_fetch` are the Rust side of a call); inclusive = time in the frame and " +
        "everything it called.",
      "",
    );
    lines.push("| kind | frame | share |", "| --- | --- | ---: |");
    for (const row of profile) {
      lines.push(`| ${row.kind} | \`${row.frame}\` | ${fmt(row.percent, 1)}% |`);
    }
    lines.push("");
  }

  if (micro.length > 0) {
    lines.push("## Per-request costs (deno bench)", "");
    lines.push("| file | bench | avg ns/op | p99 ns/op |");
    lines.push("| --- | --- | ---: | ---: |");
    for (const row of micro) {
      lines.push(`| ${row.file} | ${row.name} | ${fmt(row.avgNs, 1)} | ${fmt(row.p99Ns, 1)} |`);
    }
    lines.push("");
  }

  if (notes.length > 0) {
    lines.push("## Notes", "");
    for (const note of notes) lines.push(`- ${note}`);
    lines.push("");
  }
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------
// main

async function main(): Promise<void> {
  const only = (Deno.env.get("BENCH_ONLY") ?? "throughput,micro,fleet").split(",");
  await Deno.mkdir(RESULTS_DIR, { recursive: true });
  const dir = await Deno.makeTempDir({ prefix: "breakwater-bench-" });
  const tools = await ensureTools();
  const notes = [...tools.notes];
  let throughput: ThroughputRow[] = [];
  let bodies: BodyRow[] = [];
  let profile: ProfileRow[] = [];
  let micro: MicroRow[] = [];
  let fleet: FleetRow[] = [];
  let propagation: PropagationRow[] = [];
  try {
    if (only.includes("throughput")) {
      ({ rows: throughput, bodies, profile } = await throughputAndBodies(tools, dir, notes));
    }
    if (only.includes("micro")) micro = await microBenches(notes);
    if (only.includes("fleet")) ({ rows: fleet, propagation } = await fleetOutage(dir));
  } finally {
    await stopAll();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  const durationS = (Date.now() - startedAt) / 1000;
  const raw = { throughput, bodies, profile, micro, fleet, propagation, notes, durationS };
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  await Deno.writeTextFile(`${RESULTS_DIR}/run-${stamp}.json`, JSON.stringify(raw, null, 2));
  const markdown = report(
    { machine: await machine(), durationS },
    throughput,
    bodies,
    micro,
    fleet,
    propagation,
    profile,
    notes,
  );
  const out = Deno.env.get("BENCH_OUT") ?? `${ROOT}bench/RESULTS.md`;
  await Deno.writeTextFile(out, markdown);
  console.log(markdown);
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => {
    stopAll().finally(() => Deno.exit(130));
  });
}

await main();
