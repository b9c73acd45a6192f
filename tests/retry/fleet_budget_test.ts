/**
 * The fleet retry budget on real Deno KV: one percentage and ONE floor for the whole fleet,
 * decided from memory, counts exchanged in the background; the per-instance budget while the
 * fleet's numbers are unavailable.
 */
import assert from "node:assert/strict";
import type { FleetKvAccess } from "../../src/breaker/companion.ts";
import { createFleetBreaker } from "../../src/breaker/fleet.ts";
import {
  createFleetRetryBudgets,
  type FleetRetryBudget,
  type FleetRetryBudgets,
} from "../../src/retry/fleet_budget.ts";
import { createRetryBudget } from "../../src/retry/policy.ts";
import { waitFor } from "../_helpers/wait.ts";
import { manualClock, policy, tempKvPath } from "../breaker/_helpers.ts";

const SETTINGS = { budgetPercent: 20, minRetriesPerSecond: 3 };
const T0 = 1_700_000_000_000;

/** The breaker's side of the companion contract over a real KV handle, with its calls counted. */
function accessOver(kv: Deno.Kv, instanceId: string, now: () => number) {
  const state = { calls: 0, active: true };
  const access: FleetKvAccess = {
    instanceId,
    now,
    active: () => state.active,
    call: (operation) => {
      state.calls++;
      return operation(kv);
    },
  };
  return { access, state };
}

function spend(budget: FleetRetryBudget): number {
  let retries = 0;
  while (budget.tryAcquireRetry()) retries++;
  return retries;
}

function requests(budget: FleetRetryBudget, count: number): void {
  for (let request = 0; request < count; request++) budget.recordRequest();
}

interface Member {
  budgets: FleetRetryBudgets;
  users: FleetRetryBudget;
  state: { calls: number; active: boolean };
}

/** Two exchange rounds a second apart: everyone has published, then everyone has read. */
async function exchangeAll(members: Member[], clock: { advance(ms: number): void }) {
  for (const each of members) await each.budgets.sync();
  clock.advance(1000);
  for (const each of members) await each.budgets.sync();
}

function member(kv: Deno.Kv, instanceId: string, now: () => number): Member {
  const budgets = createFleetRetryBudgets({ now });
  const users = budgets.budget("users", SETTINGS);
  const { access, state } = accessOver(kv, instanceId, now);
  budgets.attach(access);
  return { budgets, users, state };
}

/**
 * Runs `body` with one member per id on a fresh in-memory KV and a manual clock at {@link T0},
 * and closes the KV afterwards.
 */
async function withFleet(
  instanceIds: readonly string[],
  body: (members: Member[], clock: ReturnType<typeof manualClock>) => Promise<void>,
): Promise<void> {
  const kv = await Deno.openKv(":memory:");
  const clock = manualClock(T0);
  try {
    await body(instanceIds.map((id) => member(kv, id, clock.now)), clock);
  } finally {
    kv.close();
  }
}

Deno.test("fleet retry budget: unattached, it is the per-instance budget", () => {
  const clock = manualClock(T0);
  const fleet = createFleetRetryBudgets({ now: clock.now }).budget("users", SETTINGS);
  const local = createRetryBudget({ ...SETTINGS, now: clock.now });
  for (let request = 0; request < 100; request++) {
    fleet.recordRequest();
    local.recordRequest();
  }
  let localRetries = 0;
  while (local.tryAcquireRetry()) localRetries++;
  assert.equal(spend(fleet), localRetries);
  assert.equal(localRetries, 50, "20% of 100 + 3/s x 10 s");
  assert.equal(fleet.snapshot().fleet, false);
});

Deno.test("fleet retry budget: two instances share one floor (70 retries, not 100)", async () => {
  await withFleet(["gw-a", "gw-b"], async ([a, b], clock) => {
    requests(a.users, 100);
    requests(b.users, 100);
    await exchangeAll([a, b], clock);
    assert.deepEqual(
      { ...a.users.snapshot(), retries: undefined },
      {
        requests: 100,
        retries: undefined,
        allowedRetries: 35, // 20% of its 100 + half of the fleet's floor of 30
        fleet: true,
        fleetRequests: 200,
        fleetRetries: 0,
        fleetAllowedRetries: 70, // 20% of 200 + one floor of 30
      },
    );
    assert.equal(spend(a.users), 35);
    assert.equal(spend(b.users), 35);
    // Per instance, the same traffic would have cost 2 x (20 + 30) = 100 retries.
  });
});

Deno.test("fleet retry budget: shares follow the traffic once it settled; a share already spent is not taken back", async () => {
  await withFleet(["gw-a", "gw-b"], async ([a, b], clock) => {
    requests(a.users, 180);
    requests(b.users, 20);
    await exchangeAll([a, b], clock);
    assert.equal(spend(a.users), 63, "36 + 30 x 180/200 = 63");
    assert.equal(spend(b.users), 7, "4 + 30 x 20/200 = 7");
    // b's traffic doubles. Its new requests count for its percentage at once (8 + 3 = 11, 4
    // more), for its part of the floor once every instance has published their second.
    requests(b.users, 20);
    await exchangeAll([a, b], clock);
    assert.equal(b.users.snapshot().fleetRetries, 70);
    assert.equal(spend(b.users), 4);
    clock.advance(1000);
    await exchangeAll([a, b], clock);
    // Now 8 + 30 x 40/220 = 13 for b, 2 more; a's part shrinks to 36 + 30 x 180/220 = 60, below
    // the 63 it spent, so a stops. The fleet ends at 76 of a budget of 44 + 30 = 74: the shift,
    // for one window, not more.
    assert.equal(spend(b.users), 2);
    assert.equal(spend(a.users), 0);
    assert.equal(a.users.snapshot().allowedRetries, 60);
  });
});

Deno.test("fleet retry budget: a storm ramping up on both splits the floor as before it, not by who read last", async () => {
  await withFleet(["gw-a", "gw-b"], async ([a, b], clock) => {
    requests(a.users, 50);
    requests(b.users, 50);
    await exchangeAll([a, b], clock);
    clock.advance(2000);
    // The storm: 100 more requests on each; a reads before b has published its 100.
    requests(a.users, 100);
    requests(b.users, 100);
    await a.budgets.sync();
    await b.budgets.sync();
    // Each takes half the floor (the settled seconds were 50/50): 20% of 150 + 15 = 45 each,
    // 90 for a fleet budget of 20% of 300 + 30 = 90. Split by fresh own counts against the
    // others' stale ones, a would take 30 + 30 x 150/200 = 52 and b 30 + 15 = 45: 97.
    assert.equal(a.users.snapshot().allowedRetries, 45);
    assert.equal(b.users.snapshot().allowedRetries, 45);
    assert.equal(spend(a.users) + spend(b.users), 90);
  });
});

Deno.test("fleet retry budget: the window slides; stale or degraded numbers fall back per instance", async () => {
  await withFleet(["gw-a", "gw-b"], async ([a, b], clock) => {
    requests(a.users, 100);
    requests(b.users, 100);
    await exchangeAll([a, b], clock);
    assert.equal(a.users.snapshot().fleet, true);
    // Exchanges late by a few intervals keep the shares...
    clock.advance(5000);
    assert.equal(a.users.snapshot().fleet, true);
    // ...but numbers older than the window are too old to decide with.
    clock.advance(5001);
    assert.equal(a.users.snapshot().fleet, false);
    assert.equal(a.users.snapshot().allowedRetries, 30, "its own 20% of nothing + the whole floor");
    // An instance with no requests in the window exchanges nothing (it has nothing to retry).
    await a.budgets.sync();
    assert.equal(a.users.snapshot().fleet, false);
    requests(a.users, 10);
    clock.advance(1000);
    await a.budgets.sync();
    assert.deepEqual(
      { ...a.users.snapshot(), fleet: true },
      {
        requests: 10,
        retries: 0,
        allowedRetries: 32, // 20% of 10 + the whole floor: b's requests left the window
        fleet: true,
        fleetRequests: 10,
        fleetRetries: 0,
        fleetAllowedRetries: 32,
      },
    );
    a.state.active = false; // the breaker's KV session went degraded
    assert.equal(a.users.snapshot().fleet, false);
  });
});

Deno.test("fleet retry budget: a quiet service spread thin still retries now and then", async () => {
  const ids = Array.from({ length: 40 }, (_, index) => `gw-${index}`);
  await withFleet(ids, async (fleet, clock) => {
    for (const each of fleet) requests(each.users, 1);
    await exchangeAll(fleet, clock);
    // 40 requests: the fleet may retry 8 + 30 = 38 times; each instance's share is 0.2 +
    // 30/40 < 1, raised to one retry, and the fleet total stops the last ones.
    const retries = fleet.map((each) => spend(each.users));
    assert.ok(retries.every((count) => count <= 1));
    const total = retries.reduce((sum, count) => sum + count, 0);
    assert.ok(total >= 30 && total <= 40, `fleet retried ${total} times`);
  });
});

Deno.test("fleet retry budget: no KV call per request or retry, only per exchange", async () => {
  await withFleet(["gw-a"], async ([a]) => {
    for (let request = 0; request < 1000; request++) {
      a.users.recordRequest();
      a.users.tryAcquireRetry();
    }
    assert.equal(a.state.calls, 0);
    await a.budgets.sync();
    assert.equal(a.state.calls, 2, "one commit of the counts, one read of the fleet's");
    await a.budgets.sync();
    assert.equal(a.state.calls, 2, "not again before exchangeIntervalMs");
  });
});

Deno.test("fleet retry budget: exchanged on the fleet breaker's KV session", async () => {
  const file = await tempKvPath();
  const handles = [await Deno.openKv(file.path), await Deno.openKv(file.path)];
  const breakers = handles.map((kv, index) => {
    const retryBudgets = createFleetRetryBudgets({ exchangeIntervalMs: 20 });
    const users = retryBudgets.budget("users", SETTINGS);
    const breaker = createFleetBreaker({
      kv,
      services: { users: policy() },
      instanceId: `gw-${index}`,
      syncIntervalMs: 10,
      retryBudgets,
    });
    return { breaker, users };
  });
  try {
    for (const { breaker } of breakers) await breaker.start();
    for (const { users } of breakers) requests(users, 50);
    await waitFor(
      () => breakers.every(({ users }) => users.snapshot().fleetRequests === 100),
      { timeoutMs: 3000, what: "both instances to know the fleet's 100 requests" },
    );
    const snapshot = breakers[0].users.snapshot();
    assert.equal(snapshot.fleet, true);
    assert.equal(snapshot.fleetAllowedRetries, 50, "20% of 100 + one floor of 30");
  } finally {
    for (const { breaker } of breakers) await breaker.close();
    for (const kv of handles) kv.close();
    await file.remove();
  }
});
