/**
 * The entry point of one gateway worker (a Web Worker of the gateway process): the public
 * port's listener (`reusePort`, one of several sockets the kernel spreads connections over)
 * and the request path with its own upstream pools and limiter share. The breaker is a mirror
 * of the main thread's (`mirror_breaker.ts`); KV, the admin port and health of the instance
 * stay on the main thread (README, "Workers").
 *
 * Started by `supervisor.ts` with a `start` message; answers `drain`, `reload`, `metrics`.
 *
 * @module
 */
import type { Gateway } from "../app.ts";
import { deadline, DeadlineError } from "../async/deadline.ts";
import { delay } from "../async/delay.ts";
import { createTrafficTally, type TrafficStats } from "../admin/traffic_stats.ts";
import type { BreakerConfig, GatewayConfig } from "../config/schema.ts";
import { type Http1Server, serveHttp1 } from "../server/http1_server.ts";
import { createLogger } from "../telemetry/access_log.ts";
import { createLineWriter } from "../telemetry/line_writer.ts";
import { createMirrorHub, type MirrorHub } from "./mirror_breaker.ts";
import { createProbeClient, type ProbeClient } from "./shared_prober.ts";
import {
  type FromWorker,
  STATS_INTERVAL_MS,
  type ToWorker,
  type TrafficBatch,
} from "./protocol.ts";

/** The worker's global scope (typed here: the worker lib would retype timers for every module). */
const scope = self as unknown as {
  postMessage(message: FromWorker): void;
  onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
};
const post = (message: FromWorker) => scope.postMessage(message);

let gateway: Gateway | null = null;
let server: Http1Server | null = null;
let hub: MirrorHub | null = null;
let testHooks = false;
let statsTimer: ReturnType<typeof setInterval> | undefined;
const pendingBreakers: ToWorker[] = [];
let flushLog: () => void = () => {};
let probes: ProbeClient | null = null;
/** Reloads in the order they came, so a `sync` after one answers once it is in force. */
let reloaded: Promise<void> = Promise.resolve();
/**
 * The config of a reload that came while this worker was still starting (its `start` message
 * carried the config of before): the gateway is built with it instead of being lost.
 */
let reloadedBeforeStart: GatewayConfig | null = null;

/** Log batches stay under PIPE_BUF even with some multi-byte characters. */
const LOG_BATCH_CHARS = 3000;

/**
 * Tallies per service for the main thread's dashboard (README, "Workers"): nothing in the worker
 * reads its traffic, so there is no local series to keep, and one tally per service crosses
 * threads per stats period instead of one record per request.
 */
function batchingTraffic(): { stats: TrafficStats; take(): TrafficBatch } {
  const tally = createTrafficTally();
  return {
    stats: {
      record: tally.record,
      add() {
        // A worker's traffic is only its own requests' (nothing sends it tallies).
      },
      series: () => [],
    },
    take: tally.take,
  };
}

function policiesOf(config: GatewayConfig): Record<string, BreakerConfig> {
  return Object.fromEntries(
    Object.values(config.services).map((service) => [service.name, service.breaker]),
  );
}

async function start(message: ToWorker & { type: "start" }): Promise<void> {
  testHooks = message.testHooks;
  // Several threads write to one stdout: a write(2) of at most PIPE_BUF (4096) bytes to a pipe
  // is atomic (POSIX), a larger one may be interleaved with another thread's lines.
  const lines = createLineWriter({ maxBufferedChars: LOG_BATCH_CHARS });
  flushLog = lines.flush;
  const logger = createLogger({ write: lines.write });
  hub = createMirrorHub({ post });
  for (const queued of pendingBreakers.splice(0)) handle(queued);
  const traffic = batchingTraffic();
  probes = createProbeClient(post);
  const { createGateway } = await import("../app.ts");
  const mirror = hub;
  const config = reloadedBeforeStart ?? message.config;
  reloadedBeforeStart = null;
  gateway = createGateway(config, {
    env: message.env,
    logger,
    instanceId: `${message.instanceId}-w${message.index}`,
    traffic: traffic.stats,
    breakerFactory: (next) => mirror.breakerFor(policiesOf(next)),
    probeThrough: probes.through,
  });
  try {
    server = serveHttp1({
      hostname: config.listen.hostname,
      port: message.port,
      reusePort: true,
      headerTimeoutMs: config.limits.headerTimeoutMs,
      idleTimeoutMs: config.limits.idleTimeoutMs,
      bodyIdleTimeoutMs: config.limits.bodyIdleTimeoutMs,
      maxConnections: config.limits.maxClientConnections,
    }, gateway.app.fetch);
  } catch (error) {
    await gateway.close();
    const reason = describeListenError(error);
    post({ type: "start-failed", message: reason });
    // A worker that cannot listen is of no use: end it as a crash, so the main thread stops
    // start-up (before the instance first listened) or restarts it with backoff (after).
    setTimeout(() => {
      throw new Error(`cannot listen: ${reason}`);
    });
    return;
  }
  const running = gateway;
  statsTimer = setInterval(() => {
    post({
      type: "stats",
      traffic: traffic.take(),
      pools: running.poolUsage(),
      busy: mirror.takeBusy(),
      inFlight: running.inFlight(),
    });
  }, STATS_INTERVAL_MS);
  await gateway.ready;
  post({ type: "listening", hostname: server.addr.hostname, port: server.addr.port });
}

function describeListenError(error: unknown): string {
  if (error instanceof Deno.errors.AddrInUse) return "the address is already in use";
  if (error instanceof Deno.errors.NotCapable) {
    return "Deno was not granted net access; add --allow-net";
  }
  return String((error as Error)?.message ?? error);
}

async function drain(message: ToWorker & { type: "drain" }): Promise<void> {
  const running = gateway;
  if (running === null || server === null) {
    post({ type: "drained", clean: true });
    return;
  }
  running.drain();
  const deadlineAt = Date.now() + message.timeoutMs;
  // Time for load balancers to see /readyz fail before the listener goes away.
  if (message.drainDelayMs > 0) await delay(message.drainDelayMs);
  // The server's shutdown ends once every connection left it, a WebSocket one included; the
  // session's end (and its access-log line) is recorded after that, so wait for it too before
  // reporting drained: the main thread may end this worker as soon as it hears it.
  const finished = Promise.all([server.shutdown(), running.websocketsClosed()]);
  const clean = await deadline(finished, Math.max(0, deadlineAt - Date.now())).then(
    () => true,
    (error) => {
      if (error instanceof DeadlineError) return false;
      throw error;
    },
  );
  clearInterval(statsTimer);
  hub?.close();
  await running.close();
  flushLog();
  post({ type: "drained", clean });
}

/** This worker's Prometheus text, from its own admin app (which no port serves). */
async function metricsText(): Promise<string | null> {
  if (gateway === null) return null;
  const response = await gateway.adminApp.fetch(new Request("http://worker/metrics"));
  const text = await response.text();
  return response.ok ? text : null;
}

function handle(message: ToWorker): void {
  switch (message.type) {
    case "start":
      start(message).catch((error) => post({ type: "start-failed", message: String(error) }));
      return;
    case "breakers":
      if (hub === null) pendingBreakers.push(message);
      else hub.publish(message.entries, message.degraded);
      return;
    case "probe":
      hub?.grant(message.service, message.token, message.generation);
      return;
    case "health-result":
      probes?.answer(message.id, message.status, message.error);
      return;
    case "reload": {
      const running = gateway;
      if (running === null) {
        reloadedBeforeStart = message.config;
        return;
      }
      reloaded = reloaded.then(() =>
        running.reload(message.config).then(
          () => post({ type: "reloaded", ok: true }),
          (error) => post({ type: "reloaded", ok: false, message: String(error) }),
        )
      );
      return;
    }
    case "sync": {
      const { id } = message;
      reloaded.then(() => post({ type: "synced", id }));
      return;
    }
    case "metrics":
      metricsText().then(
        (text) => post({ type: "metrics", id: message.id, text }),
        () => post({ type: "metrics", id: message.id, text: null }),
      );
      return;
    case "drain":
      drain(message).catch((error) => {
        post({ type: "drained", clean: false });
        throw error;
      });
      return;
    case "crash":
      if (!testHooks) return;
      // An uncaught error, as a defect would throw: the main thread sees the error event.
      setTimeout(() => {
        throw new Error("crash requested by a test hook");
      });
      return;
  }
}

scope.onmessage = (event) => handle(event.data);
