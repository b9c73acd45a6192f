/**
 * WebSocket message throughput: echo round trips through Breakwater against nginx proxying
 * WebSocket (`proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; Connection
 * "upgrade"`, one worker), and straight to the upstream, all with the same echo upstream
 * (`Deno.serve` + `Deno.upgradeWebSocket`, its own process).
 *
 * The load is its own Deno process too: `WS_CONNECTIONS` WebSockets each keeping `WS_WINDOW`
 * messages in flight, for `DURATION_S` seconds; a round trip is two messages through the proxy
 * (one each way). Two loads: small text messages (`SMALL_BYTES`), and 1 MiB binary messages
 * (MiB/s each way). Targets are measured in alternation, `REPS` times; medians. CPU per round
 * trip is the proxy process's CPU time over the run (/proc), so it excludes the load and the
 * upstream, which share the machine's cores with it.
 *
 * @module
 */
import { loadCpus, pinned } from "../lib/cpus.ts";
import { freePort, waitHttp } from "../lib/ports.ts";
import { spawn, stopPid } from "../lib/processes.ts";
import { cpuSeconds, waitQuiet } from "../lib/sampling.ts";
import type { BenchContext, Scenario } from "../lib/scenario.ts";
import { decoder, DURATION_S, log, median, REPS } from "../lib/settings.ts";
import { startGateway, startNginxWith, type Target } from "../lib/targets.ts";

/** WebSockets the load keeps open. */
export const WS_CONNECTIONS = 16;
/** Messages each keeps in flight. */
export const WS_WINDOW = 8;
/** The small message's size in bytes. */
export const SMALL_BYTES = 100;
/** The large message's size in bytes. */
export const LARGE_BYTES = 1024 * 1024;

/** The echo upstream: every message comes back as it came. */
const UPSTREAM_SOURCE = `
const port = Number(Deno.args[0]);
Deno.serve({ hostname: "127.0.0.1", port, onListen: () => console.log("listening") }, (request) => {
  if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") return new Response("ok");
  const { socket, response } = Deno.upgradeWebSocket(request);
  socket.binaryType = "arraybuffer";
  socket.onmessage = (event) => socket.send(event.data);
  socket.onerror = () => {};
  return response;
});
`;

/** The load: connections x window messages in flight; prints one JSON line. */
const LOAD_SOURCE = `
const [url, connections, windowSize, bytes, seconds] = Deno.args;
const payload = Number(bytes) > 1024 ? new Uint8Array(Number(bytes)) : "x".repeat(Number(bytes));
let roundTrips = 0;
let failures = 0;
const sockets = [];
await Promise.all(Array.from({ length: Number(connections) }, () => new Promise((resolve) => {
  const socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  socket.onopen = () => resolve();
  socket.onerror = () => { failures++; resolve(); };
  sockets.push(socket);
})));
let running = true;
const started = performance.now();
for (const socket of sockets) {
  if (socket.readyState !== WebSocket.OPEN) continue;
  socket.onmessage = () => {
    roundTrips++;
    if (running) socket.send(payload);
  };
  for (let i = 0; i < Number(windowSize); i++) socket.send(payload);
}
await new Promise((resolve) => setTimeout(resolve, Number(seconds) * 1000));
running = false;
const elapsedS = (performance.now() - started) / 1000;
for (const socket of sockets) socket.close();
console.log(JSON.stringify({ roundTrips, elapsedS, failures }));
Deno.exit(0);
`;

/** One measured run. */
interface LoadResult {
  /** Echo round trips per second (each is one message each way through the proxy). */
  roundTripsPerS: number;
  /** Proxy CPU per round trip, microseconds (null for the direct target). */
  cpuUsPerRoundTrip: number | null;
  /** Connections that failed to open. */
  failures: number;
}

async function load(
  dir: string,
  target: Target,
  bytes: number,
  connections: number,
  windowSize: number,
  seconds = DURATION_S,
): Promise<LoadResult> {
  const url = target.url.replace("http://", "ws://") + "/ws/echo";
  const cpuBefore = target.pid > 0 ? await cpuSeconds(target.pid) : 0;
  // The load client runs with the upstream on the load side's cores (bench/lib/cpus.ts).
  const [command, ...args] = pinned(loadCpus(), [
    Deno.execPath(),
    "run",
    "--allow-net",
    `${dir}/ws_load.ts`,
    url,
    String(connections),
    String(windowSize),
    String(bytes),
    String(seconds),
  ]);
  const output = await new Deno.Command(command, {
    args,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const cpuAfter = target.pid > 0 ? await cpuSeconds(target.pid) : 0;
  const text = decoder.decode(output.stdout).trim().split("\n").pop() ?? "";
  const parsed = JSON.parse(text || '{"roundTrips":0,"elapsedS":1,"failures":-1}');
  const roundTripsPerS = parsed.roundTrips / parsed.elapsedS;
  return {
    roundTripsPerS,
    cpuUsPerRoundTrip: target.pid > 0 && parsed.roundTrips > 0
      ? ((cpuAfter - cpuBefore) * 1e6) / parsed.roundTrips
      : null,
    failures: parsed.failures,
  };
}

/** nginx, one worker, proxying WebSocket as its documentation shows. */
function startNginxWebSocket(dir: string, upstreamPort: number): Promise<Target> {
  return startNginxWith(dir, {
    name: "nginx-ws",
    label: "nginx",
    http: [],
    server: [
      "location / {",
      `  proxy_pass http://127.0.0.1:${upstreamPort};`,
      "  proxy_http_version 1.1;",
      "  proxy_set_header Upgrade $http_upgrade;",
      '  proxy_set_header Connection "upgrade";',
      "  proxy_read_timeout 3600s;",
      "}",
    ],
  });
}

function summary(name: string, unit: string, runs: LoadResult[], scale: number): string {
  const rate = median(runs.map((r) => r.roundTripsPerS)) * scale;
  const cpu = runs[0].cpuUsPerRoundTrip === null
    ? ""
    : `, ${median(runs.map((r) => r.cpuUsPerRoundTrip ?? 0)).toFixed(1)} us CPU/round trip`;
  const failures = runs.reduce((sum, r) => sum + Math.max(0, r.failures), 0);
  return `${name}: ${rate.toFixed(scale === 1 ? 0 : 1)} ${unit}${cpu}` +
    `${failures ? `, ${failures} failed connections` : ""} (median of ${runs.length}: ${
      runs.map((r) => (r.roundTripsPerS * scale).toFixed(scale === 1 ? 0 : 1)).join(", ")
    })`;
}

async function run(context: BenchContext): Promise<void> {
  const { results, dir } = context;
  if (!context.tools.nginx) {
    results.notes.push("nginx missing: websocket skipped");
    return;
  }
  await Deno.writeTextFile(`${dir}/ws_upstream.ts`, UPSTREAM_SOURCE);
  await Deno.writeTextFile(`${dir}/ws_load.ts`, LOAD_SOURCE);
  const upstreamPort = freePort();
  const upstream = spawn("ws-upstream", [
    Deno.execPath(),
    "run",
    "--allow-net",
    `${dir}/ws_upstream.ts`,
    String(upstreamPort),
  ], { logPath: `${dir}/ws-upstream.log`, cpus: loadCpus() });
  const targets: Target[] = [];
  try {
    await waitHttp(`http://127.0.0.1:${upstreamPort}/`);
    targets.push({ name: "direct", url: `http://127.0.0.1:${upstreamPort}`, pid: 0 });
    targets.push(await startNginxWebSocket(dir, upstreamPort));
    targets.push(
      await startGateway({
        name: "Breakwater",
        dir,
        services: {
          ws: {
            prefix: "/ws",
            upstreams: [`http://127.0.0.1:${upstreamPort}`],
            websocket: { maxConnections: 10_000 },
          },
        },
        kvPath: ":memory:",
        logLevel: "warn",
        logPath: `${dir}/gateway-ws.log`,
      }),
    );
    for (const target of targets) await waitHttp(`${target.url}/ws/echo`);
    // Warm-up (JIT of the upstream, the gateway and the load), not measured.
    for (const target of targets) {
      await load(dir, target, SMALL_BYTES, WS_CONNECTIONS, WS_WINDOW, 1);
    }
    const loads = [
      { label: "small", bytes: SMALL_BYTES, connections: WS_CONNECTIONS, window: WS_WINDOW },
      { label: "1 MiB", bytes: LARGE_BYTES, connections: 4, window: 2 },
    ];
    for (const each of loads) {
      const runs = targets.map(() => [] as LoadResult[]);
      for (let rep = 0; rep < REPS; rep++) {
        for (const [index, target] of targets.entries()) {
          await waitQuiet(20_000);
          const result = await load(dir, target, each.bytes, each.connections, each.window);
          runs[index].push(result);
          log(
            `websocket ${each.label} rep ${rep + 1} ${target.name}: ` +
              `${result.roundTripsPerS.toFixed(0)} round trips/s` +
              (result.cpuUsPerRoundTrip === null
                ? ""
                : `, ${result.cpuUsPerRoundTrip.toFixed(1)} us CPU/round trip`),
          );
        }
      }
      const large = each.bytes === LARGE_BYTES;
      for (const [index, target] of targets.entries()) {
        results.notes.push(
          `websocket ${each.label} (${each.connections} connections x ${each.window} in flight): ` +
            summary(
              target.name,
              large ? "MiB/s each way" : "round trips/s",
              runs[index],
              large ? each.bytes / (1024 * 1024) : 1,
            ),
        );
      }
      const rate = (index: number) => median(runs[index].map((r) => r.roundTripsPerS));
      const cpu = (index: number) => median(runs[index].map((r) => r.cpuUsPerRoundTrip ?? 0));
      results.notes.push(
        `websocket ${each.label}: Breakwater vs nginx: ${(rate(2) / rate(1)).toFixed(2)}x the ` +
          `rate, ${(cpu(2) / cpu(1)).toFixed(2)}x the CPU per round trip`,
      );
    }
  } finally {
    for (const target of targets) if (target.pid > 0) await stopPid(target.pid);
    await upstream.stop();
  }
}

/** The WebSocket scenario. */
export const websocket: Scenario = {
  name: "websocket",
  title: "WebSocket echo round trips (100 B x 16x8 in flight, 1 MiB x 4x2): Breakwater vs " +
    "nginx vs direct, same upstream",
  needs: [],
  run,
};
