/**
 * Fleet-scale measurements shared by `tests/e2e/fleet_scale_test.ts` (bounded, asserted) and the
 * fleet benchmark (repeated, reported): N light instance processes (`_fleet_scale_child.ts`) on
 * one KV (a shared file, or the test KV Connect server as a child process) in front of an
 * upstream in this process that counts what it receives.
 *
 * - {@link measureOutage}: the upstream goes dark while every instance receives `ratePerS`;
 *   counts the failing calls it receives before every instance rejects, and how long after the
 *   threshold-th failure each instance started rejecting (trip propagation).
 * - {@link measureRetryStorm}: the upstream is dark from the start, the instances retry within
 *   their retry budget (per instance, or fleet-wide); counts retries received per second.
 *
 * Every child is bounded (killed at its deadline) and every server closed.
 *
 * @module
 */
import { spawnKvConnectServer } from "../_helpers/kv_connect/mod.ts";
import type { ChildPlan, ChildReport } from "./_fleet_scale_child.ts";

const CHILD = new URL("./_fleet_scale_child.ts", import.meta.url).pathname;
const DENO_JSON = new URL("../../deno.json", import.meta.url).pathname;
const KV_CONNECT_TOKEN = "fleet-scale-token-0123456789";

/** Where the instances share their KV. */
export type FleetKv = "file" | "kv-connect";

/** One request the upstream received. */
export interface Received {
  /** Epoch ms. */
  atMs: number;
  /** The upstream was dark (answered 503). */
  dark: boolean;
  /** 0 for a first attempt, n for the n-th retry. */
  attempt: number;
}

interface CountingUpstream {
  url: string;
  received: Received[];
  setDark(dark: boolean): void;
  close(): Promise<void>;
}

function startCountingUpstream(dark: boolean): CountingUpstream {
  const received: Received[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    received.push({ atMs: Date.now(), dark, attempt: Number(request.headers.get("x-attempt")) });
    return dark ? new Response("dark", { status: 503 }) : new Response("ok");
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/`,
    received,
    setDark: (value) => dark = value,
    close: () => server.shutdown(),
  };
}

interface SharedKv {
  path: string;
  env: Record<string, string>;
  close(): Promise<void>;
}

async function startSharedKv(kind: FleetKv): Promise<SharedKv> {
  const dir = await Deno.makeTempDir({ prefix: "breakwater-fleet-scale-" });
  const remove = () => Deno.remove(dir, { recursive: true }).catch(() => {});
  if (kind === "file") return { path: `${dir}/fleet.kv`, env: {}, close: remove };
  try {
    const server = await spawnKvConnectServer({
      path: `${dir}/fleet.kv`,
      accessToken: KV_CONNECT_TOKEN,
    });
    return {
      path: server.url,
      env: { DENO_KV_ACCESS_TOKEN: KV_CONNECT_TOKEN },
      async close() {
        await server.stop();
        await remove();
      },
    };
  } catch (error) {
    await remove();
    throw error;
  }
}

interface Child {
  ready: Promise<void>;
  report: Promise<ChildReport>;
  start(atMs: number): Promise<void>;
  kill(): void;
}

function spawnChild(plan: ChildPlan, env: Record<string, string>, deadlineMs: number): Child {
  const process = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      `--config=${DENO_JSON}`,
      "--quiet",
      "--allow-read",
      "--allow-write",
      "--allow-net=127.0.0.1",
      "--allow-env=DENO_KV_ACCESS_TOKEN",
      CHILD,
      JSON.stringify(plan),
    ],
    env,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    // A child that never finishes is killed; its missing report fails the run.
    signal: AbortSignal.timeout(deadlineMs),
  }).spawn();
  let onReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => onReady = resolve);
  const stdout = (async () => {
    let text = "";
    for await (const chunk of process.stdout.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      if (text.includes("ready\n")) onReady();
    }
    return text;
  })();
  const stderr = new Response(process.stderr).text();
  const report = (async () => {
    const [status, out, err] = await Promise.all([process.status, stdout, stderr]);
    if (plan.trace) console.error(err.trim());
    const last = out.trim().split("\n").at(-1) ?? "";
    if (!status.success || !last.startsWith("{")) {
      throw new Error(`instance ${plan.instanceId} failed (${status.code}): ${err}`);
    }
    return JSON.parse(last) as ChildReport;
  })();
  // Whichever comes first: ready, or the child died before it got there.
  const readyOrDead = Promise.race([ready, report.then(() => {})]);
  report.catch(() => {});
  return {
    ready: readyOrDead,
    report,
    async start(atMs) {
      const writer = process.stdin.getWriter();
      await writer.write(new TextEncoder().encode(`${atMs}\n`));
      await writer.close();
    },
    kill() {
      try {
        process.kill("SIGKILL");
      } catch {
        // already gone
      }
    },
  };
}

/** Runs the children to the end; every one is killed if the run fails or outlives `deadlineMs`. */
async function runChildren(
  plans: ChildPlan[],
  env: Record<string, string>,
  deadlineMs: number,
  onStart: (startAtMs: number) => void,
): Promise<ChildReport[]> {
  const children = plans.map((plan) => spawnChild(plan, env, deadlineMs));
  try {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("instances not ready in time")), deadlineMs / 2);
    });
    try {
      await Promise.race([Promise.all(children.map((child) => child.ready)), timeout]);
    } finally {
      clearTimeout(timer);
    }
    const startAtMs = Date.now() + 300;
    await Promise.all(children.map((child) => child.start(startAtMs)));
    onStart(startAtMs);
    return await Promise.all(children.map((child) => child.report));
  } catch (error) {
    for (const child of children) child.kill();
    await Promise.allSettled(children.map((child) => child.report));
    throw error;
  }
}

/** Options of {@link measureOutage}. */
export interface OutageOptions {
  /** Instance processes. */
  instances: number;
  /** Requests per second each instance receives. */
  ratePerS: number;
  /** Shared file or KV Connect server. */
  kv: FleetKv;
  /** `failureThreshold`. Default 5. */
  failureThreshold?: number;
  /** Requests in flight per instance at most. Default 4 (as the fleet bench's load). */
  maxInFlight?: number;
  /**
   * Healthy traffic before the upstream goes dark (warm connections, every instance knows the
   * others are sending). Default 2500.
   */
  warmMs?: number;
  /** Traffic after the upstream went dark. Default 1500. */
  darkMs?: number;
  /** The breaker's `holdBack` (default: its default). */
  holdBack?: boolean;
  /** The breaker's `alertSyncIntervalMs` (default: its default). */
  alertSyncIntervalMs?: number;
  /** Children trace their calls and KV calls to stderr. */
  trace?: boolean;
}

/** What {@link measureOutage} counted. */
export interface OutageResult {
  /** Failing calls the upstream received (all of them: nothing probes within the run). */
  failedCalls: number;
  /**
   * Per instance: its first rejection minus the threshold-th failure at the upstream (ms): when
   * it stopped sending (held back or open).
   */
  tripLagsMs: number[];
  /**
   * Per instance: when it first saw the breaker open (its own or the fleet's) minus the
   * threshold-th failure at the upstream (ms): the trip's propagation.
   */
  openLagsMs: number[];
  /** Last instance's first rejection minus the moment the upstream went dark (ms). */
  allRejectMs: number;
  /** Instances that never rejected (should be none). */
  neverRejected: number;
  /** Every instance's own report. */
  reports: ChildReport[];
}

/**
 * One outage: N instances at `ratePerS` each, the upstream goes dark after `warmMs`; counts the
 * failing calls until every instance rejects.
 *
 * @example
 * ```ts
 * const result = await measureOutage({ instances: 10, ratePerS: 50, kv: "file" });
 * console.log(result.failedCalls, Math.max(...result.tripLagsMs));
 * ```
 */
export async function measureOutage(options: OutageOptions): Promise<OutageResult> {
  const threshold = options.failureThreshold ?? 5;
  const warmMs = options.warmMs ?? 2500;
  const darkMs = options.darkMs ?? 1500;
  const upstream = startCountingUpstream(false);
  let darkAtMs = Infinity;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const kv = await startSharedKv(options.kv);
  try {
    const plans = Array.from({ length: options.instances }, (_, index): ChildPlan => ({
      kvPath: kv.path,
      instanceId: `gw-${index}`,
      upstreamUrl: upstream.url,
      runForMs: warmMs + darkMs,
      ratePerS: options.ratePerS,
      maxInFlight: options.maxInFlight ?? 4,
      failureThreshold: threshold,
      mode: "breaker",
      holdBack: options.holdBack,
      alertSyncIntervalMs: options.alertSyncIntervalMs,
      trace: options.trace,
    }));
    const reports = await runChildren(plans, kv.env, 60_000, (startAtMs) => {
      darkAtMs = startAtMs + warmMs;
      timer = setTimeout(() => upstream.setDark(true), darkAtMs - Date.now());
    });
    const failures = upstream.received.filter((each) => each.dark);
    const tripAtMs = failures[threshold - 1]?.atMs ?? Infinity;
    const rejects = reports.map((report) => report.firstRejectAtMs);
    const known = rejects.filter((at): at is number => at !== null);
    const opened = reports.map((report) => report.openSeenAtMs).filter((at) => at !== null);
    return {
      failedCalls: failures.length,
      tripLagsMs: known.map((at) => at - tripAtMs),
      openLagsMs: opened.map((at) => at! - tripAtMs),
      allRejectMs: known.length === 0 ? Infinity : Math.max(...known) - darkAtMs,
      neverRejected: rejects.length - known.length,
      reports,
    };
  } finally {
    clearTimeout(timer);
    await upstream.close();
    await kv.close();
  }
}

/** Options of {@link measureRetryStorm}. */
export interface RetryStormOptions {
  /** Instance processes. */
  instances: number;
  /** Requests per second each instance receives. */
  ratePerS: number;
  /** Shared file or KV Connect server. */
  kv: FleetKv;
  /** The per-instance budget, or the fleet-wide one. */
  budget: "local" | "fleet";
  /** How long the upstream is dark under load. */
  runForMs: number;
  /** Retries are counted from here on (after the budget's window filled). */
  measureFromMs: number;
  /** Extra tries per request. Default 2. */
  attempts?: number;
  /** Default 20. */
  budgetPercent?: number;
  /** Default 3. */
  minRetriesPerSecond?: number;
  /** The budgets' window. Default 10 s. */
  windowMs?: number;
}

/** What {@link measureRetryStorm} counted. */
export interface RetryStormResult {
  /** First attempts per second received, from `measureFromMs` to the end. */
  requestsPerS: number;
  /** Retries per second received over the same time. */
  retriesPerS: number;
  /** Every instance's own report. */
  reports: ChildReport[];
}

/**
 * A dead upstream behind N instances that retry within their budget.
 *
 * @example
 * ```ts
 * const fleet = await measureRetryStorm({ instances: 10, ratePerS: 10, kv: "file", budget: "fleet", runForMs: 14_000, measureFromMs: 10_000 });
 * console.log(fleet.retriesPerS);
 * ```
 */
export async function measureRetryStorm(options: RetryStormOptions): Promise<RetryStormResult> {
  const upstream = startCountingUpstream(true);
  const kv = await startSharedKv(options.kv);
  let startAtMs = 0;
  try {
    const plans = Array.from({ length: options.instances }, (_, index): ChildPlan => ({
      kvPath: kv.path,
      instanceId: `gw-${index}`,
      upstreamUrl: upstream.url,
      runForMs: options.runForMs,
      ratePerS: options.ratePerS,
      maxInFlight: 8,
      failureThreshold: 5,
      mode: options.budget === "fleet" ? "retry-fleet" : "retry-local",
      attempts: options.attempts ?? 2,
      budgetPercent: options.budgetPercent ?? 20,
      minRetriesPerSecond: options.minRetriesPerSecond ?? 3,
      retryWindowMs: options.windowMs,
    }));
    const reports = await runChildren(
      plans,
      kv.env,
      options.runForMs + 60_000,
      (atMs) => startAtMs = atMs,
    );
    const fromMs = startAtMs + options.measureFromMs;
    const toMs = startAtMs + options.runForMs;
    const measured = upstream.received.filter((each) => each.atMs >= fromMs && each.atMs < toMs);
    const seconds = (toMs - fromMs) / 1000;
    return {
      requestsPerS: measured.filter((each) => each.attempt === 0).length / seconds,
      retriesPerS: measured.filter((each) => each.attempt > 0).length / seconds,
      reports,
    };
  } finally {
    await upstream.close();
    await kv.close();
  }
}
