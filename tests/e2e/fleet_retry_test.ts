/**
 * The fleet retry budget across real gateway processes: three instances on one KV file in front
 * of an upstream that answers 503, retries on. Two services point at it: `pooled` with the
 * fleet budget (the default), `solo` with `retry.fleetBudget: false`. Counted at the upstream:
 * the fleet's retries of `pooled` come to about one floor, those of `solo` to one per instance.
 */
import assert from "node:assert/strict";
import { retryCountKey } from "../../src/retry/mod.ts";
import { type GatewayProcess, startGatewayProcess } from "../_helpers/gateway.ts";
import { startUpstream } from "../_helpers/upstream.ts";
import { bounded, closeAll, waitFor } from "../_helpers/wait.ts";

const INSTANCES = 3;
/** The floor: 1 retry/s over the 10 s window = 10 retries per window. */
const FLOOR_PER_WINDOW = 10;
/** Requests per instance and service in the storm: each wants more retries than the floor. */
const STORM_REQUESTS = 15;

/** Each instance's `pooled` requests in the window, as published for the fleet budget. */
async function published(kv: Deno.Kv): Promise<number[]> {
  const counts = new Map<string, number>();
  const prefix = retryCountKey("pooled", 0, "").slice(0, 3);
  for await (const entry of kv.list<[number, number]>({ prefix })) {
    const instanceId = String(entry.key[4]);
    counts.set(instanceId, (counts.get(instanceId) ?? 0) + entry.value[0]);
  }
  return [...counts.values()];
}

async function send(gateway: GatewayProcess, path: string, count: number): Promise<number[]> {
  const statuses: number[] = [];
  for (let index = 0; index < count; index++) {
    const response = await fetch(`${gateway.url}${path}`, bounded());
    await response.body?.cancel();
    statuses.push(response.status);
  }
  return statuses;
}

Deno.test("fleet retry budget across three gateway processes: one floor for the fleet, three with fleetBudget false", async () => {
  let storm = false;
  const received = { pooled: 0, solo: 0 };
  const upstream = startUpstream((request) => {
    if (!storm) return new Response("up");
    const service = new URL(request.url).pathname.startsWith("/pooled") ? "pooled" : "solo";
    received[service]++;
    return new Response("down", { status: 503 });
  });
  const dir = await Deno.makeTempDir({ prefix: "breakwater-fleet-retry-" });
  const kvPath = `${dir}/fleet.kv`;
  const retry = {
    attempts: 1,
    // Only the floor, so the figures are the floors: 20% of the requests would hide them.
    budgetPercent: 0,
    minRetriesPerSecond: FLOOR_PER_WINDOW / 10,
    baseDelayMs: 0,
    maxDelayMs: 0,
  };
  // 503 is retried but is no breaker failure here: the breaker would stop the storm.
  const breaker = { failureStatuses: "500" };
  const config = {
    kv: { path: kvPath, syncIntervalMs: 50 },
    // One thread per instance: with workers the retry budget is each worker's own, not the
    // fleet's (README, "Workers").
    workers: 1,
    services: {
      pooled: { prefix: "/pooled", upstreams: [upstream.origin], retry, breaker },
      solo: {
        prefix: "/solo",
        upstreams: [upstream.origin],
        retry: { ...retry, fleetBudget: false },
        breaker,
      },
    },
  };
  const gateways: GatewayProcess[] = [];
  let observer: Deno.Kv | null = null;
  try {
    const started = await Promise.allSettled(
      Array.from(
        { length: INSTANCES },
        () => startGatewayProcess(config, { sharedKvPath: kvPath }),
      ),
    );
    for (const each of started) if (each.status === "fulfilled") gateways.push(each.value);
    const failed = started.find((each) => each.status === "rejected");
    if (failed !== undefined) throw failed.reason;
    observer = await Deno.openKv(kvPath);
    const kv = observer;
    // Warm-up: every instance publishes its requests (once a second), then publishes again
    // twice, so each has read the others' counts before the storm.
    for (const [round, total] of [[0, 5], [1, 6], [2, 7]]) {
      const count = round === 0 ? 5 : 1;
      await Promise.all(gateways.map((gateway) => send(gateway, "/pooled/x", count)));
      await waitFor(async () => {
        const counts = await published(kv);
        return counts.length === INSTANCES && counts.every((each) => each === total);
      }, { timeoutMs: 10_000, intervalMs: 25, what: `every instance to publish ${total}` });
    }

    storm = true;
    const answers = await Promise.all(gateways.flatMap((gateway) => [
      send(gateway, "/pooled/x", STORM_REQUESTS),
      send(gateway, "/solo/x", STORM_REQUESTS),
    ]));
    assert.ok(answers.flat().every((status) => status === 503));
    const firstAttempts = INSTANCES * STORM_REQUESTS;
    const retries = {
      pooled: received.pooled - firstAttempts,
      solo: received.solo - firstAttempts,
    };
    console.log(
      `retries in one 10 s window, ${INSTANCES} instances, floor ${FLOOR_PER_WINDOW}: fleet budget ${retries.pooled}, per-instance budgets ${retries.solo}`,
    );
    // Per instance: each spends its whole floor.
    assert.equal(retries.solo, INSTANCES * FLOOR_PER_WINDOW);
    // The fleet: one floor, split by the instances' shares of the requests every instance had
    // published before the storm (rounded down: 3 x 3 = 9), whoever read the others last.
    assert.ok(
      retries.pooled >= FLOOR_PER_WINDOW - INSTANCES && retries.pooled <= FLOOR_PER_WINDOW,
      `fleet budget: ${retries.pooled} retries (one floor is ${FLOOR_PER_WINDOW})`,
    );
  } finally {
    observer?.close();
    await closeAll(Object.fromEntries(gateways.map((each, index) => [
      `gateway ${index}`,
      { close: async () => void await each.stop() },
    ])));
    await upstream.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
