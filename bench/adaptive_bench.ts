/**
 * Adaptive concurrency against a slowing upstream, on and off.
 *
 * The upstream has a fixed capacity (`--capacity` requests served at once, the rest wait in
 * its own FIFO queue, like a thread pool or a database). An open-loop client offers `--rate`
 * requests per second through the gateway. After `--fast-ms` the upstream's service time goes
 * from `--fast-service-ms` to `--slow-service-ms`, so the offered load exceeds its capacity.
 * With adaptive concurrency off, the gateway keeps up to `pool.maxConnections` requests at the
 * upstream, whose queue (and latency) grows; with it on, the limit follows latency down and
 * the excess is shed at the gateway (503 `pool_saturated`) within `queueTimeoutMs`, so the
 * latency of what is served stays bounded. Latencies are reported for the slow phase.
 *
 * Run: deno run --allow-net --allow-env --allow-read --allow-write --allow-sys bench/adaptive_bench.ts
 *      [--rate 300] [--fast-ms 2000] [--slow-ms 4000] [--capacity 4]
 *      [--fast-service-ms 5] [--slow-service-ms 25] [--max-connections 64]
 */
import { createGateway } from "../src/app.ts";
import { parseConfig } from "../src/config/schema.ts";
import { createLogger } from "../src/telemetry/mod.ts";

/** `--name value` pairs from the command line. */
const args: Record<string, string> = {};
for (let i = 0; i < Deno.args.length - 1; i++) {
  if (Deno.args[i].startsWith("--")) args[Deno.args[i].slice(2)] = Deno.args[i + 1];
}
const num = (name: string, fallback: number) =>
  args[name] === undefined ? fallback : Number(args[name]);
const rate = num("rate", 300);
const fastMs = num("fast-ms", 2000);
const slowMs = num("slow-ms", 4000);
const capacity = num("capacity", 4);
const fastServiceMs = num("fast-service-ms", 5);
const slowServiceMs = num("slow-service-ms", 25);
const maxConnections = num("max-connections", 64);

/** A capacity-bound upstream: `capacity` workers, a FIFO queue, a switchable service time. */
function startSlowingUpstream() {
  let serviceMs = fastServiceMs;
  let busy = 0;
  const queue: (() => void)[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async () => {
    if (busy >= capacity) await new Promise<void>((resolve) => queue.push(resolve));
    else busy++;
    await new Promise((resolve) => setTimeout(resolve, serviceMs));
    const next = queue.shift();
    if (next !== undefined) next();
    else busy--;
    return new Response("ok");
  });
  return {
    origin: `http://127.0.0.1:${server.addr.port}`,
    slowDown: () => (serviceMs = slowServiceMs),
    close: () => server.shutdown(),
  };
}

interface Sample {
  sentAt: number;
  latencyMs: number;
  status: number;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

async function run(adaptive: boolean) {
  const upstream = startSlowingUpstream();
  const gateway = createGateway(
    parseConfig({
      kv: { path: ":memory:" },
      telemetry: { prometheus: false },
      limits: { maxConnections: 1000 },
      services: {
        slow: {
          prefix: "/slow",
          upstreams: [upstream.origin],
          timeoutMs: 2000,
          pool: { maxConnections, maxPending: 16, queueTimeoutMs: 100 },
          breaker: { failureThreshold: 1_000_000 },
          adaptiveConcurrency: {
            enabled: adaptive,
            minLimit: 2,
            tolerance: 2,
            sampleWindowMs: 100,
          },
        },
      },
    }),
    { logger: createLogger({ level: "error", write: () => {} }), env: {} },
  );
  await gateway.ready;
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    gateway.app.fetch,
  );
  const url = `http://127.0.0.1:${server.addr.port}/slow/x`;

  const samples: Sample[] = [];
  const pending = new Set<Promise<void>>();
  const limits: number[] = [];
  const start = performance.now();
  const slowAt = start + fastMs;
  const end = slowAt + slowMs;
  let slowed = false;
  let sent = 0;
  while (performance.now() < end) {
    const now = performance.now();
    if (!slowed && now >= slowAt) {
      slowed = true;
      upstream.slowDown();
    }
    const due = Math.floor((now - start) * rate / 1000);
    for (; sent < due; sent++) {
      const sentAt = performance.now();
      const task = fetch(url).then(async (response) => {
        await response.body?.cancel();
        samples.push({ sentAt, latencyMs: performance.now() - sentAt, status: response.status });
      }, () => {
        samples.push({ sentAt, latencyMs: performance.now() - sentAt, status: 0 });
      });
      pending.add(task);
      task.finally(() => pending.delete(task));
    }
    if (slowed) limits.push(gateway.poolUsage().slow.max);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  await Promise.all([...pending]);
  await server.shutdown();
  await gateway.close();
  await upstream.close();

  const slowPhase = samples.filter((sample) => sample.sentAt >= slowAt);
  const served = slowPhase.filter((sample) => sample.status === 200)
    .map((sample) => sample.latencyMs).sort((a, b) => a - b);
  const count = (status: number) => slowPhase.filter((sample) => sample.status === status).length;
  return {
    adaptive,
    slowPhaseRequests: slowPhase.length,
    served: served.length,
    shed503: count(503),
    timedOut504: count(504),
    p50Ms: Math.round(percentile(served, 0.5)),
    p99Ms: Math.round(percentile(served, 0.99)),
    maxMs: Math.round(served.at(-1) ?? NaN),
    limitAtEnd: limits.at(-1),
    limitMin: Math.min(...limits),
  };
}

console.log(
  `rate ${rate}/s; upstream capacity ${capacity}, service ${fastServiceMs} ms -> ${slowServiceMs} ms ` +
    `after ${fastMs} ms, slow for ${slowMs} ms; pool.maxConnections ${maxConnections}`,
);
const results = [await run(false), await run(true)];
console.table(results);
