/**
 * The bounded trip's two parts on real Deno KV: the hold-back (a failure near the threshold
 * holds this instance's new calls until the fleet has counted it) and the pulse (every failure
 * report carries the reporter's counts to the other instances, by re-sync or by watch).
 */
import assert from "node:assert/strict";
import { createFleetBreaker, type FleetBreaker } from "../../src/breaker/fleet.ts";
import type { BreakerConfig } from "../../src/config/schema.ts";
import { openKvConnect, startKvConnectServer } from "../_helpers/kv_connect/mod.ts";
import { waitFor } from "../_helpers/wait.ts";
import { allowed, type CallCounts, countingStore, policy, tempKvPath } from "./_helpers.ts";

const FAIL = { status: 503, durationMs: 2 };
const OK = { status: 200, durationMs: 2 };
const HELD = { allowed: false, retryAfterMs: 1000, state: "half_open" };

function breakerOn(
  kv: Deno.Kv,
  instanceId: string,
  rules: BreakerConfig,
  extra: {
    holdBack?: boolean;
    counts?: CallCounts;
    syncIntervalMs?: number;
    watchIsShared?: boolean;
  } = {},
): FleetBreaker {
  return createFleetBreaker({
    kv,
    services: { users: rules },
    instanceId,
    syncIntervalMs: extra.syncIntervalMs ?? 10,
    activityIntervalMs: 20,
    holdBack: extra.holdBack,
    watchIsShared: extra.watchIsShared,
    wrapStore: extra.counts ? (store) => countingStore(store, extra.counts!) : undefined,
  });
}

/**
 * `size` instances that are all sending to "users" (a success each), started, and knowing of
 * each other's activity.
 */
async function busyFleet(
  kvs: Deno.Kv[],
  rules: BreakerConfig,
  extra: { holdBack?: boolean; counts?: CallCounts } = {},
): Promise<FleetBreaker[]> {
  const fleet = kvs.map((kv, index) =>
    breakerOn(kv, `gw-${index}`, rules, {
      ...extra,
      counts: index === 0 ? extra.counts : undefined,
    })
  );
  for (const breaker of fleet) await breaker.start();
  for (const breaker of fleet) breaker.record("users", allowed(breaker.admit("users")), OK);
  await waitFor(
    () => fleet.every((breaker) => breaker.view("users").othersSending === kvs.length - 1),
    { timeoutMs: 3000, what: "every instance to know the others are sending" },
  );
  return fleet;
}

async function closeFleet(fleet: FleetBreaker[], kvs: Deno.Kv[]): Promise<void> {
  for (const breaker of fleet) await breaker.close();
  for (const kv of kvs) {
    try {
      kv.close();
    } catch {
      // closed by the test
    }
  }
}

Deno.test("hold-back: a failure near the threshold holds new calls until the fleet counted it", async () => {
  const kv = await Deno.openKv(":memory:");
  const kvs = [kv, kv, kv];
  const counts: CallCounts = {};
  // Threshold 3, two others sending: our first failure plus one each would reach it.
  const fleet = await busyFleet(kvs, policy({ failureThreshold: 3 }), { counts });
  const [a, b] = fleet;
  try {
    a.record("users", allowed(a.admit("users")), FAIL);
    assert.deepEqual(a.admit("users"), HELD, "held at once, before any KV call returned");
    assert.equal(a.view("users").state, "closed", "a hold is not a state change");
    assert.equal(b.admit("users").allowed, true, "only the instance that failed holds");
    await waitFor(() => a.admit("users").allowed, { timeoutMs: 2000, what: "release" });
    assert.ok((counts.reportFailures ?? 0) >= 1, "released after the report...");
    assert.ok((counts.readWindow ?? 0) >= 1, "...and a read of the window");
    assert.equal(a.view("users").failuresInWindow, 1);
    a.record("users", allowed(a.admit("users")), OK);
    assert.equal(a.admit("users").allowed, true, "a success never holds");
  } finally {
    await closeFleet(fleet, [kv]);
  }
});

Deno.test("hold-back: the threshold-th failure opens the breaker, held calls never go out", async () => {
  const kv = await Deno.openKv(":memory:");
  const fleet = await busyFleet([kv, kv, kv], policy({ failureThreshold: 3 }));
  const [a] = fleet;
  try {
    let sent = 0;
    // A caller that tries every ms, as traffic would: each failure waits to be counted.
    await waitFor(() => {
      const admission = a.admit("users");
      if (admission.allowed) {
        sent++;
        a.record("users", admission, FAIL);
      }
      return a.view("users").state === "open";
    }, { timeoutMs: 3000, intervalMs: 1, what: "the breaker to open" });
    assert.equal(sent, 3, "exactly threshold calls reached the upstream");
  } finally {
    await closeFleet(fleet, [kv]);
  }
});

Deno.test("hold-back: never alone, never far below the threshold, never when turned off", async () => {
  const kv = await Deno.openKv(":memory:");
  const alone = breakerOn(kv, "alone", policy({ failureThreshold: 5 }));
  const far = await busyFleet([kv, kv, kv], policy({ failureThreshold: 100 }));
  const kvOff = await Deno.openKv(":memory:");
  // The instance's option decides only for a policy without a holdBack key of its own (the
  // config schema always fills one; embedders may leave it out).
  const { holdBack: _own, ...withoutOwnKey } = policy({ failureThreshold: 3 });
  const off = await busyFleet([kvOff, kvOff, kvOff], withoutOwnKey as BreakerConfig, {
    holdBack: false,
  });
  const kvPerService = await Deno.openKv(":memory:");
  // A breaker policy with a holdBack key of its own (a per-service config key) decides for itself.
  const noHold = { ...policy({ failureThreshold: 3 }), holdBack: false } as BreakerConfig;
  const perService = await busyFleet([kvPerService, kvPerService, kvPerService], noHold);
  try {
    await alone.start();
    for (let failure = 0; failure < 4; failure++) {
      alone.record("users", allowed(alone.admit("users")), FAIL);
    }
    assert.equal(alone.admit("users").allowed, true, "its own count is exact: nothing to wait for");
    for (let failure = 0; failure < 50; failure++) {
      far[0].record("users", allowed(far[0].admit("users")), FAIL);
    }
    assert.equal(far[0].admit("users").allowed, true, "50 + 2 of 100: not near");
    for (let failure = 0; failure < 2; failure++) {
      off[0].record("users", allowed(off[0].admit("users")), FAIL);
    }
    assert.equal(off[0].admit("users").allowed, true, "holdBack: false");
    for (let failure = 0; failure < 2; failure++) {
      perService[0].record("users", allowed(perService[0].admit("users")), FAIL);
    }
    assert.equal(perService[0].admit("users").allowed, true, "the service's own holdBack: false");
  } finally {
    await alone.close();
    await closeFleet(far, [kv]);
    await closeFleet(off, [kvOff]);
    await closeFleet(perService, [kvPerService]);
  }
});

Deno.test("hold-back: KV going away releases the hold, the local breaker decides", async () => {
  const file = await tempKvPath();
  const kvs = [await Deno.openKv(file.path), await Deno.openKv(file.path)];
  const fleet = await busyFleet(kvs, policy({ failureThreshold: 2 }));
  const [a] = fleet;
  try {
    a.record("users", allowed(a.admit("users")), FAIL);
    assert.deepEqual(a.admit("users"), HELD);
    kvs[0].close();
    await waitFor(() => a.degraded() && a.admit("users").allowed, {
      timeoutMs: 3000,
      what: "degraded and serving",
    });
  } finally {
    await closeFleet(fleet, kvs);
    await file.remove();
  }
});

Deno.test("pulse: a quiet instance learns the fleet's count at its re-sync and opens on its first failure", async () => {
  const file = await tempKvPath();
  const kvA = await Deno.openKv(file.path);
  const kvB = await Deno.openKv(file.path);
  const rules = policy({ failureThreshold: 3 });
  // Margin 0: what is tested here is the knowledge, not the hold.
  const a = breakerOn(kvA, "gw-a", rules, { holdBack: false });
  const countsB: CallCounts = {};
  const b = breakerOn(kvB, "gw-b", rules, { holdBack: false, counts: countsB });
  try {
    await a.start();
    await b.start();
    a.record("users", allowed(a.admit("users")), FAIL);
    a.record("users", allowed(a.admit("users")), FAIL);
    await waitFor(() => b.view("users").failuresInWindow === 2, {
      timeoutMs: 2000,
      what: "b to know a's two failures",
    });
    assert.equal(b.view("users").state, "closed");
    // 2 known + b's own 1 = the threshold: b opens on its own failure, without a KV round trip.
    b.record("users", allowed(b.admit("users")), FAIL);
    assert.equal(b.admit("users").allowed, false);
    assert.equal(b.view("users").state, "open");
  } finally {
    await a.close();
    await b.close();
    kvA.close();
    kvB.close();
    await file.remove();
  }
});

Deno.test("pulse over a KV Connect watch: learnt at once, with no fast polling", async () => {
  const dir = await Deno.makeTempDir({ prefix: "breakwater-pulse-" });
  const token = "pulse-test-token-0123456789";
  const server = await startKvConnectServer({ path: `${dir}/kv.sqlite`, accessToken: token });
  const kvA = await openKvConnect(server.url, token);
  const kvB = await openKvConnect(server.url, token);
  const rules = policy({ failureThreshold: 3 });
  const countsB: CallCounts = {};
  // A re-sync every 5 s: anything b learns sooner came by the watch.
  const slow = { holdBack: false, syncIntervalMs: 5000, watchIsShared: true };
  const a = breakerOn(kvA, "gw-a", rules, slow);
  const b = breakerOn(kvB, "gw-b", rules, { ...slow, counts: countsB });
  try {
    await a.start();
    await b.start();
    const readsAtStart = countsB.readRecords ?? 0;
    const startedMs = performance.now();
    a.record("users", allowed(a.admit("users")), FAIL);
    a.record("users", allowed(a.admit("users")), FAIL);
    await waitFor(() => b.view("users").failuresInWindow === 2, {
      timeoutMs: 3000,
      what: "b to know a's two failures",
    });
    const learntMs = performance.now() - startedMs;
    assert.ok(learntMs < 1000, `learnt after ${learntMs.toFixed(0)} ms`);
    b.record("users", allowed(b.admit("users")), FAIL);
    assert.equal(b.view("users").state, "open");
    assert.equal(countsB.readRecords ?? 0, readsAtStart, "no re-sync was needed");
  } finally {
    await a.close();
    await b.close();
    kvA.close();
    kvB.close();
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
