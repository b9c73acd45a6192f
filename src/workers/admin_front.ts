/**
 * The admin port of an instance with workers: the main thread's admin app (breakers, reload,
 * dashboard, audit) with the parts that live in the workers put together first: `/metrics`
 * merged from every worker, pool usage summed, and `GET /admin/workers`.
 *
 * @module
 */
import { Hono } from "hono";
import type { PoolUsage } from "../gateway/status.ts";
import { createExpositionMerger } from "./metrics_merge.ts";
import type { WorkerExposition } from "./restart_offsets.ts";

/** One worker as `GET /admin/workers` shows it. */
export interface WorkerStatus {
  /** 0-based index. */
  index: number;
  /** True while its listener accepts. */
  listening: boolean;
  /** Requests it answered since the instance started (all its incarnations). */
  requests: number;
  /** Requests in flight at its last stats (once a second). */
  inFlight: number;
  /** Times it was restarted after a crash. */
  restarts: number;
}

/** Options of {@link createWorkersAdminApp}. */
export interface WorkersAdminOptions {
  /** The main thread's admin app. */
  mainApp: { fetch(request: Request): Response | Promise<Response> };
  /**
   * Every worker's Prometheus text with its slot and incarnation (a worker that does not answer
   * in time or is restarting: its last answer).
   */
  workerMetrics: () => Promise<WorkerExposition[]>;
  /** Pool usage summed over the workers (as of their last stats). */
  pools: () => Record<string, PoolUsage>;
  /** The workers now. */
  workers: () => WorkerStatus[];
  /** The main thread's public app (its `/readyz` is the instance's, before the workers'). */
  mainPublicApp: { fetch(request: Request): Response | Promise<Response> };
  /** True once every worker listened (a restarting worker then leaves the instance ready). */
  started: () => boolean;
  /** Makes worker `index` throw (tests only; absent: the route does not exist). */
  crash?: (index: number) => boolean;
  /**
   * Brings every worker up to the main thread's config and breakers; awaited after an admin
   * write succeeds (a reload, a forced breaker) so its answer means the workers have it too.
   */
  syncWorkers?: () => Promise<void>;
}

/**
 * Creates the admin app of an instance with workers.
 *
 * @example
 * ```ts
 * serveHttp1({ port: 9901 }, createWorkersAdminApp({ mainApp, workerMetrics, pools, workers }).fetch);
 * ```
 */
export function createWorkersAdminApp(options: WorkersAdminOptions): Hono {
  const app = new Hono();
  // One merger for the instance's life: it remembers what each slot's earlier workers counted.
  const merge = createExpositionMerger();
  app.get("/metrics", async (c) => {
    const own = await options.mainApp.fetch(c.req.raw);
    if (!own.ok) return own;
    const text = merge(await own.text(), await options.workerMetrics());
    const headers = new Headers(own.headers);
    headers.delete("content-length");
    return new Response(text, { status: own.status, headers });
  });
  // The main thread's pools serve no traffic: the workers' pools, summed, stand in for them.
  const withWorkerPools = async (request: Request): Promise<Response> => {
    const own = await options.mainApp.fetch(request);
    if (!own.ok) return own;
    const body = await own.json() as { services?: { service: string; pool?: unknown }[] };
    const pools = options.pools();
    for (const service of body.services ?? []) {
      if (pools[service.service] !== undefined) service.pool = pools[service.service];
    }
    const headers = new Headers(own.headers);
    headers.delete("content-length");
    return new Response(JSON.stringify(body), { status: own.status, headers });
  };
  app.get("/admin/breakers", (c) => withWorkerPools(c.req.raw));
  app.get("/admin/dashboard.json", (c) => withWorkerPools(c.req.raw));
  // The instance's readiness on the admin port: the main thread's (breakers loaded, KV,
  // draining) and every worker listening at start-up; later one listening worker is enough
  // (the others serve while a crashed one restarts). The public port's /readyz is a worker's.
  app.get("/readyz", async () => {
    const own = await options.mainPublicApp.fetch(new Request("http://instance/readyz"));
    const body = await own.json() as { status: string; services?: Record<string, unknown> };
    const workers = options.workers();
    const listening = workers.filter((worker) => worker.listening).length;
    let status = own.status;
    const required = options.started() ? 1 : workers.length;
    if (listening < required && own.ok) {
      status = 503;
      body.status = "starting";
    }
    const pools = options.pools();
    for (const [name, service] of Object.entries(body.services ?? {})) {
      if (pools[name] !== undefined) (service as { pool?: unknown }).pool = pools[name];
    }
    return new Response(
      JSON.stringify({ ...body, workers: { listening, total: workers.length } }),
      {
        status,
        headers: { "content-type": "application/json", "cache-control": "no-store" },
      },
    );
  });
  app.get("/admin/workers", (c) => {
    c.header("cache-control", "no-store");
    return c.json({ workers: options.workers() });
  });
  if (options.crash !== undefined) {
    const crash = options.crash;
    app.post("/admin/test/crash-worker/:index", (c) => {
      const index = Number(c.req.param("index"));
      return crash(index) ? c.json({ crashing: index }) : c.json({ error: "no such worker" }, 404);
    });
  }
  app.all("*", async (c) => {
    const answer = await options.mainApp.fetch(c.req.raw);
    const write = c.req.method !== "GET" && c.req.method !== "HEAD";
    if (write && answer.ok && options.syncWorkers !== undefined) await options.syncWorkers();
    return answer;
  });
  return app;
}
