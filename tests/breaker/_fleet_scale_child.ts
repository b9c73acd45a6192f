/**
 * One light "gateway instance" for the fleet-scale measurements: a FleetBreaker (and a retry
 * budget) on a shared KV (a file or a KV Connect URL) in front of an upstream, sending paced
 * requests as a load generator would send them to a gateway: `ratePerS` per second, at most
 * `maxInFlight` at once. It is the request path of `src/proxy/forward.ts` cut down to what the
 * breaker and the retry budget see, so ten of them fit on two cores.
 *
 * One argument: a JSON {@link ChildPlan}. `DENO_KV_ACCESS_TOKEN` in the environment for KV
 * Connect. Prints `ready` once its breaker has loaded the fleet's state, then waits for one line
 * on stdin: the epoch ms at which every child starts sending. Prints one JSON
 * {@link ChildReport} line on stdout when done.
 *
 * @module
 */
import { type BreakerStore, createFleetBreaker } from "../../src/breaker/mod.ts";
import { createFleetRetryBudgets } from "../../src/retry/mod.ts";
import { createRetryBudget, type RetryBudget } from "../../src/retry/policy.ts";
import { parseStatusRanges } from "../../src/config/status_ranges.ts";
import { policy } from "./_helpers.ts";

/** What one child does. */
export interface ChildPlan {
  /** `Deno.openKv` path: a file or an `http://` KV Connect URL. */
  kvPath: string;
  /** Distinct per child. */
  instanceId: string;
  /** Where requests go (`x-attempt` says which attempt a request is). */
  upstreamUrl: string;
  /** How long to send, from the start time the runner writes on stdin. */
  runForMs: number;
  /** Requests per second offered to this instance. */
  ratePerS: number;
  /** Requests in flight at most (more are dropped, as a client that gave up). */
  maxInFlight: number;
  /** `failureThreshold` of the service. */
  failureThreshold: number;
  /** `breaker`: breaker only; `retry-local` / `retry-fleet`: retries within that budget. */
  mode: "breaker" | "retry-local" | "retry-fleet";
  /** Extra tries per request in the retry modes. */
  attempts?: number;
  /** `budgetPercent` in the retry modes. */
  budgetPercent?: number;
  /** `minRetriesPerSecond` in the retry modes. */
  minRetriesPerSecond?: number;
  /** The retry budget's window in the retry modes (default 10 s). */
  retryWindowMs?: number;
  /** `holdBack` of the breaker (default: the breaker's default). */
  holdBack?: boolean;
  /** `alertSyncIntervalMs` of the breaker (default: the breaker's default). */
  alertSyncIntervalMs?: number;
  /** Write a timeline of calls, rejections and KV calls to stderr (JSON lines). */
  trace?: boolean;
}

/** What one child saw. */
export interface ChildReport {
  instanceId: string;
  /** First attempts sent. */
  sent: number;
  /** Retries sent. */
  retries: number;
  /** Retries the budget refused. */
  refused: number;
  /** When the breaker first rejected a request (epoch ms), or null. */
  firstRejectAtMs: number | null;
  /** When this instance first saw the service not closed (epoch ms), or null. */
  openSeenAtMs: number | null;
  /** True when the KV session was degraded at the end. */
  degraded: boolean;
  /** When this instance was first seen degraded while sending (epoch ms), or null. */
  degradedAtMs: number | null;
  /** The retry budget's counts at the end (retry modes). */
  budget: Record<string, unknown> | null;
}

const plan: ChildPlan = JSON.parse(Deno.args[0]);
const trace = (event: Record<string, unknown>) => {
  if (plan.trace) {
    console.error(JSON.stringify({ id: plan.instanceId, atMs: Date.now(), ...event }));
  }
};
const kv = await Deno.openKv(plan.kvPath);
let openSeenAtMs: number | null = null;
const retryMode = plan.mode !== "breaker";
const retryOptions = {
  budgetPercent: plan.budgetPercent ?? 20,
  minRetriesPerSecond: plan.minRetriesPerSecond ?? 3,
};
const windowMs = plan.retryWindowMs ?? 10_000;
const fleetBudgets = plan.mode === "retry-fleet"
  ? createFleetRetryBudgets({ windowMs, exchangeIntervalMs: windowMs / 10 })
  : undefined;
const budget: RetryBudget = fleetBudgets !== undefined
  ? fleetBudgets.budget("users", retryOptions)
  : createRetryBudget({ ...retryOptions, windowMs, now: () => performance.now() });
const breaker = createFleetBreaker({
  kv,
  services: {
    users: policy({
      failureThreshold: plan.failureThreshold,
      recoveryTimeoutMs: 60_000,
      // The retry runs measure the budget alone: the upstream's 503s are not breaker failures
      // there (as with `failureStatuses: "500"`), so the breaker neither trips nor reports.
      ...(retryMode ? { failureStatuses: parseStatusRanges("500") } : {}),
    }),
  },
  instanceId: plan.instanceId,
  retryBudgets: fleetBudgets,
  holdBack: plan.holdBack,
  alertSyncIntervalMs: plan.alertSyncIntervalMs,
  // As the gateway does for an http(s) `kv.path`: KV Connect's watch delivers every writer's changes.
  watchIsShared: plan.kvPath.startsWith("http"),
  onTransition: (event) => {
    trace({ event: "transition", from: event.from, to: event.to });
    if (event.to !== "closed") openSeenAtMs ??= event.atMs;
  },
  wrapStore: plan.trace ? (store) => tracedStore(store) : undefined,
});
await breaker.start();

/** The store with every call's start and duration traced. */
function tracedStore(store: BreakerStore): BreakerStore {
  const traced = {} as Record<string, unknown>;
  for (const [name, method] of Object.entries(store)) {
    traced[name] = (...args: unknown[]) => {
      const startedMs = Date.now();
      const result = (method as (...args: unknown[]) => unknown)(...args);
      if (result instanceof Promise) {
        result.then(
          () => trace({ event: "kv", op: name, startedMs, ms: Date.now() - startedMs }),
          () => trace({ event: "kv", op: name, startedMs, failed: true }),
        );
      }
      return result;
    };
  }
  return traced as unknown as BreakerStore;
}

const client = Deno.createHttpClient({});
let sent = 0;
let retries = 0;
let refused = 0;
let inFlight = 0;
let firstRejectAtMs: number | null = null;

async function readLine(): Promise<string> {
  let text = "";
  for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    text += chunk;
    if (text.includes("\n")) break;
  }
  return text.trim();
}

async function call(attempt: number): Promise<number> {
  const response = await fetch(plan.upstreamUrl, {
    client,
    headers: { "x-attempt": String(attempt), "x-instance": plan.instanceId },
    // A hung upstream must end the child (and fail the run), not stall it.
    signal: AbortSignal.timeout(5000),
  });
  await response.body?.cancel();
  return response.status;
}

async function request(): Promise<void> {
  const admission = breaker.admit("users");
  if (!admission.allowed) {
    if (firstRejectAtMs === null) trace({ event: "first_reject", state: admission.state });
    firstRejectAtMs ??= Date.now();
    return;
  }
  sent++;
  budget.recordRequest();
  for (let attempt = 0;; attempt++) {
    const startedMs = performance.now();
    const status = await call(attempt);
    if (status >= 500) {
      trace({ event: "failed", startedMs: Date.now() - Math.round(performance.now() - startedMs) });
    }
    breaker.record("users", admission, { status, durationMs: performance.now() - startedMs });
    if (status < 500 || attempt >= (retryMode ? plan.attempts ?? 2 : 0)) return;
    if (!budget.tryAcquireRetry()) {
      refused++;
      return;
    }
    retries++;
  }
}

console.log("ready");
const startAtMs = Number(await readLine());
const stopAtMs = startAtMs + plan.runForMs;
await new Promise((resolve) => setTimeout(resolve, Math.max(0, startAtMs - Date.now())));
const intervalMs = 1000 / plan.ratePerS;
// Independent clients: each instance's requests start at a phase of their own, not in step.
let nextMs = performance.now() + Math.random() * intervalMs;
await new Promise((resolve) => setTimeout(resolve, Math.max(0, nextMs - performance.now())));
const pending = new Set<Promise<void>>();
let degradedAtMs: number | null = null;
while (Date.now() < stopAtMs) {
  if (degradedAtMs === null && breaker.degraded()) {
    degradedAtMs = Date.now();
    trace({ event: "degraded" });
  }
  if (inFlight < plan.maxInFlight) {
    inFlight++;
    const task = request().catch(() => {}).finally(() => {
      inFlight--;
      pending.delete(task);
    });
    pending.add(task);
  }
  nextMs += intervalMs;
  // A starved process does not catch up with a burst of the requests it missed: that would
  // measure the machine's load (calls in flight at once), not the breaker.
  if (nextMs < performance.now() - intervalMs) nextMs = performance.now();
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, nextMs - performance.now())));
}
await Promise.allSettled([...pending]);
const degraded = breaker.degraded();
const budgetAtEnd = retryMode ? { ...budget.snapshot() } : null;
client.close();
await breaker.close();
kv.close();
const report: ChildReport = {
  instanceId: plan.instanceId,
  sent,
  retries,
  refused,
  firstRejectAtMs,
  openSeenAtMs,
  degraded,
  degradedAtMs,
  budget: budgetAtEnd,
};
console.log(JSON.stringify(report));
