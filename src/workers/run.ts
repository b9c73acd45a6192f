/**
 * Runs an instance with several workers (README, "Workers"): the main thread keeps the config,
 * KV, the one fleet breaker, health checks, the admin port and telemetry export; each worker
 * serves the public port (`reusePort`) with its own pools and limiter share. SIGHUP reloads
 * the main thread's config and every worker takes it; SIGTERM drains every worker.
 *
 * @module
 */
import type { Gateway } from "../app.ts";
import type { GatewayConfig } from "../config/schema.ts";
import type { PoolUsage } from "../gateway/status.ts";
import type { Http1Server } from "../server/http1_server.ts";
import type { Logger } from "../telemetry/access_log.ts";
import { createWorkersAdminApp, type WorkerStatus } from "./admin_front.ts";
import { createBreakerHost } from "./breaker_host.ts";
import type { FromWorker } from "./protocol.ts";
import type { WorkerExposition } from "./restart_offsets.ts";
import { workerShare } from "./share.ts";
import type { SharedProber } from "./shared_prober.ts";
import { createSupervisor } from "./supervisor.ts";

/** How long a scrape waits for a worker's metrics before merging without them. */
export const WORKER_METRICS_TIMEOUT_MS = 1000;
/** How often the config in force is compared with the one the workers run (reloads). */
const CONFIG_CHECK_MS = 50;
/** How long an admin write's answer waits for the workers to have it (a stuck one is skipped). */
export const WORKER_SYNC_TIMEOUT_MS = 2000;

/** A worker's start-up error, with the flag to add when it is a missing read permission. */
function explainStartError(error: string): string {
  const denied = /Requires read access to "([^"]+)"/.exec(error);
  if (denied === null) return `a worker failed to start: ${error}`;
  const code = decodeURIComponent(new URL("..", import.meta.url).pathname).replace(/\/$/, "");
  return `a worker could not read ${denied[1]}: workers load the gateway's code after start-up; ` +
    `add --allow-read=${code},${code.replace(/\/src$/, "")}/deno.json (deno task start does)`;
}

/** Options of {@link runWorkers}. */
export interface RunWorkersOptions {
  /** The config in force at start-up. */
  config: GatewayConfig;
  /** How many workers (2 or more). */
  count: number;
  /** The instance's id (the main thread's gateway's); worker `i` reports as `<id>-w<i>`. */
  instanceId: string;
  /** The main thread gateway's health probes (its `probeThrough`), which workers share. */
  prober: SharedProber;
  /** The main thread's gateway: its breaker, admin app and reload are the instance's. */
  gateway: Gateway;
  env: Record<string, string | undefined>;
  logger: Logger;
  /** Resolves with the first shutdown signal. */
  shutdownSignal: Promise<Deno.Signal>;
  /** The admin listener (started by the caller, with the handler given here). */
  listenAdmin: (handler: (request: Request) => Response | Promise<Response>) => Http1Server;
}

/**
 * Starts the workers and the admin port, serves until a shutdown signal, drains; resolves
 * with the exit code (1 when the public port could not be listened on).
 *
 * @example
 * ```ts
 * return await runWorkers({ config, count: 2, gateway, env, logger, shutdownSignal, listenAdmin });
 * ```
 */
export async function runWorkers(options: RunWorkersOptions): Promise<number> {
  const { config, count, gateway, logger, instanceId } = options;
  const statuses: (WorkerStatus & { pools: Record<string, PoolUsage> })[] = Array.from(
    { length: count },
    (_, index) => ({ index, listening: false, requests: 0, inFlight: 0, restarts: 0, pools: {} }),
  );
  /** Per slot, which start of it is running (0 first; one more after each worker ends). */
  const incarnations: number[] = new Array(count).fill(0);
  let publicPort = config.listen.port;
  let portKnown = publicPort !== 0;
  let workersConfig = gateway.config;
  let nextMetricsId = 1;
  const metricsWaiters = new Map<number, { index: number; resolve(text: string | null): void }>();
  const drained = new Map<number, () => void>();
  let nextSyncId = 1;
  const syncWaiters = new Map<number, { index: number; resolve(): void }>();
  let startFailed: (message: string) => void = () => {};
  const failedToStart = new Promise<string>((resolve) => startFailed = resolve);
  let allListening: () => void = () => {};
  const listening = new Promise<void>((resolve) => allListening = resolve);
  let started = false;
  let allClean = true;
  const testHooks = options.env.BREAKWATER_TEST_HOOKS === "1";

  const onMessage = (index: number, message: FromWorker) => {
    if (host.handle(index, message)) return;
    const status = statuses[index];
    switch (message.type) {
      case "listening":
        status.listening = true;
        if (!portKnown) {
          publicPort = message.port;
          portKnown = true;
          for (let other = 1; other < count; other++) supervisor.start(other);
        }
        if (!started && statuses.every((each) => each.listening)) {
          started = true;
          allListening();
        } else if (started) {
          logger.info("worker listening", { worker: index, port: message.port });
        }
        return;
      case "start-failed":
        logger.error("worker could not start", { worker: index, error: message.message });
        if (!started) {
          startFailed(
            `cannot listen on ${config.listen.hostname}:${config.listen.port} (public): ` +
              message.message,
          );
        }
        return;
      case "stats": {
        for (const [service, tally] of Object.entries(message.traffic)) {
          gateway.traffic.add(service, tally);
          status.requests += tally.requests;
        }
        status.inFlight = message.inFlight;
        status.pools = message.pools;
        return;
      }
      case "metrics":
        metricsWaiters.get(message.id)?.resolve(message.text);
        return;
      case "synced":
        syncWaiters.get(message.id)?.resolve();
        return;
      case "health-probe": {
        const { id } = message;
        options.prober.probe(
          message.service,
          message.origin,
          message.path,
          message.intervalMs,
          message.timeoutMs,
        )
          .then(
            (status) =>
              supervisor.postTo(index, { type: "health-result", id, status, error: null }),
            (error) =>
              supervisor.postTo(index, {
                type: "health-result",
                id,
                status: null,
                error: String(error),
              }),
          );
        return;
      }
      case "reloaded":
        if (!message.ok) {
          logger.error("worker reload failed", { worker: index, error: message.message });
        }
        return;
      case "drained":
        if (!message.clean) allClean = false;
        drained.get(index)?.();
        return;
    }
  };

  const supervisor = createSupervisor({
    count,
    logger,
    startMessage: (index) => ({
      type: "start",
      index,
      instanceId,
      config: workerShare(workersConfig, count),
      port: publicPort,
      env: options.env,
      testHooks,
    }),
    onMessage,
    onGone: (index, error) => {
      // A worker that dies before the instance first listened will not do better on a retry
      // (a missing permission, a module that does not load): start-up fails.
      if (!started && error !== undefined) startFailed(explainStartError(error));
      // The slot's next worker is a new incarnation (its counters start from zero).
      incarnations[index]++;
      const status = statuses[index];
      if (status.listening && started) status.restarts++;
      status.listening = false;
      status.inFlight = 0;
      status.pools = {};
      host.forget(index);
      drained.get(index)?.();
      for (const waiter of metricsWaiters.values()) {
        if (waiter.index === index) waiter.resolve(null);
      }
      for (const waiter of syncWaiters.values()) {
        if (waiter.index === index) waiter.resolve();
      }
    },
  });
  const host = createBreakerHost({
    breaker: () => gateway.breaker,
    postTo: supervisor.postTo,
    broadcast: supervisor.broadcast,
  });
  // A worker learns the breakers before its first request: the snapshot follows `start`.
  const startWorker = supervisor.start;
  supervisor.start = (index) => {
    startWorker(index);
    supervisor.postTo(index, host.snapshot());
  };

  // A reload (SIGHUP or POST /admin/reload, both on the main thread) reaches every worker.
  const sendReload = () => {
    if (gateway.config === workersConfig) return;
    workersConfig = gateway.config;
    supervisor.broadcast({ type: "reload", config: workerShare(workersConfig, count) });
  };
  const configCheck = setInterval(sendReload, CONFIG_CHECK_MS);
  /** The config and breakers in force on the main thread, in force in every worker. */
  const syncWorkers = async (): Promise<void> => {
    sendReload();
    host.publish();
    const asks: Promise<void>[] = [];
    for (let index = 0; index < count; index++) {
      if (!statuses[index].listening) continue;
      const id = nextSyncId++;
      asks.push(
        new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, WORKER_SYNC_TIMEOUT_MS);
          syncWaiters.set(id, {
            index,
            resolve: () => {
              clearTimeout(timer);
              resolve();
            },
          });
          supervisor.postTo(index, { type: "sync", id });
        }).finally(() => syncWaiters.delete(id)),
      );
    }
    await Promise.all(asks);
  };

  // Each worker's last answer: a worker that is slow to answer a scrape (a busy event loop) or
  // restarting is summed with its last series rather than left out, so a slow answer does not
  // make the instance's counters go backwards (Prometheus would read a drop as a counter reset).
  // A restarted worker's own counters start again from zero: the answer carries which start of
  // the slot it came from, and the merge adds what the slot's earlier starts counted.
  const lastMetrics: (WorkerExposition | null)[] = new Array(count).fill(null);
  const workerMetrics = async (): Promise<WorkerExposition[]> => {
    const asks: Promise<WorkerExposition | null>[] = [];
    for (let index = 0; index < count; index++) {
      if (!statuses[index].listening) {
        asks.push(Promise.resolve(lastMetrics[index]));
        continue;
      }
      const id = nextMetricsId++;
      const incarnation = incarnations[index];
      asks.push(
        new Promise<WorkerExposition | null>((resolve) => {
          const timer = setTimeout(() => resolve(lastMetrics[index]), WORKER_METRICS_TIMEOUT_MS);
          metricsWaiters.set(id, {
            index,
            resolve: (text) => {
              clearTimeout(timer);
              if (text !== null) lastMetrics[index] = { slot: index, incarnation, text };
              resolve(lastMetrics[index]);
            },
          });
          supervisor.postTo(index, { type: "metrics", id });
        }).finally(() => metricsWaiters.delete(id)),
      );
    }
    return (await Promise.all(asks)).filter((each): each is WorkerExposition => each !== null);
  };
  const adminApp = createWorkersAdminApp({
    mainApp: gateway.adminApp,
    mainPublicApp: gateway.app,
    started: () => started,
    workerMetrics,
    pools: () => {
      const sums: Record<string, PoolUsage> = {};
      for (const status of statuses) {
        for (const [service, usage] of Object.entries(status.pools)) {
          const sum = sums[service] ??= { active: 0, pending: 0, max: 0 };
          sum.active += usage.active;
          sum.pending += usage.pending;
          sum.max += usage.max;
        }
      }
      return sums;
    },
    workers: () => statuses.map(({ pools: _pools, ...status }) => ({ ...status })),
    syncWorkers,
    crash: testHooks
      ? (index) => {
        if (!statuses[index]?.listening) return false;
        supervisor.postTo(index, { type: "crash" });
        return true;
      }
      : undefined,
  });

  const stopAll = async () => {
    clearInterval(configCheck);
    supervisor.terminateAll();
    host.close();
    await gateway.close();
  };

  let admin: Http1Server;
  try {
    admin = options.listenAdmin(adminApp.fetch);
  } catch (error) {
    await stopAll();
    throw error;
  }
  await gateway.ready;
  supervisor.start(0);
  if (portKnown) { for (let index = 1; index < count; index++) supervisor.start(index); }

  const first = await Promise.race([
    listening.then(() => null),
    failedToStart,
    options.shutdownSignal.then(() => "shutdown"),
  ]);
  if (first !== null && first !== "shutdown") {
    logger.flush();
    console.error(`breakwater: ${first}`);
    await admin.shutdown();
    await stopAll();
    return 1;
  }
  if (first === null) {
    logger.info("listening", {
      hostname: config.listen.hostname,
      port: publicPort,
      adminHostname: admin.addr.hostname,
      adminPort: admin.addr.port,
      degraded: gateway.breaker.degraded(),
      workers: count,
    });
  }

  const signal = await options.shutdownSignal;
  const shutdown = gateway.config.shutdown;
  const inFlight = () => statuses.reduce((sum, status) => sum + status.inFlight, 0);
  logger.info("shutdown started", { signal, inFlight: inFlight(), workers: count });
  const hardStop = setTimeout(() => {
    logger.error("shutdown did not finish in time; exiting", { inFlight: inFlight() });
    logger.flush();
    Deno.exit(1);
  }, shutdown.drainDelayMs + shutdown.timeoutMs + 5000);
  Deno.unrefTimer(hardStop);
  gateway.drain();
  supervisor.stopRestarting();
  await Promise.all(statuses.map((status) =>
    new Promise<void>((resolve) => {
      if (!status.listening) return resolve();
      drained.set(status.index, resolve);
      supervisor.postTo(status.index, {
        type: "drain",
        drainDelayMs: shutdown.drainDelayMs,
        timeoutMs: shutdown.timeoutMs,
      });
    })
  ));
  if (!allClean) {
    logger.warn("shutdown timeout passed with requests in flight", { inFlight: inFlight() });
  }
  await stopAll();
  await admin.shutdown();
  clearTimeout(hardStop);
  logger.info("shutdown complete", { clean: allClean, workers: count });
  logger.flush();
  return 0;
}
