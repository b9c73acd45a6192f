/**
 * Two gateway instances in one test process, each with its own `Deno.openKv` handle on one KV
 * file (as two processes would be). Watch does not cross handles on a file the way it does not
 * cross processes, so these tests exercise the `getMany` re-sync path.
 */
import assert from "node:assert/strict";
import { createFleetBreaker, type FleetBreaker } from "../../src/breaker/fleet.ts";
import { recordKey } from "../../src/breaker/kv_store.ts";
import type { BreakerConfig } from "../../src/config/schema.ts";
import type { Admission, TransitionEvent } from "../../src/breaker/types.ts";
import {
  allowed,
  type ManualClock,
  manualClock,
  policy,
  seededRandom,
  tempKvPath,
} from "./_helpers.ts";
import { waitFor } from "../_helpers/wait.ts";

const FAIL = { status: 502, durationMs: 5 };
const OK = { status: 200, durationMs: 5 };
const SYNC_MS = 25;

interface Instance {
  breaker: FleetBreaker;
  kv: Deno.Kv;
  events: TransitionEvent[];
}

interface Fleet {
  clock: ManualClock;
  path: string;
  instances: Instance[];
  /** Closes breakers and handles, removes the file. */
  close(): Promise<void>;
}

async function fleetOf(
  count: number,
  breakerPolicy: BreakerConfig,
  extra: { probeLeaseMs?: number; reopen?: boolean; holdBack?: boolean } = {},
): Promise<Fleet> {
  const file = await tempKvPath();
  const clock = manualClock();
  const instances: Instance[] = [];
  for (let index = 0; index < count; index++) {
    const kv = await Deno.openKv(file.path);
    const events: TransitionEvent[] = [];
    const breaker = createFleetBreaker({
      kv,
      services: { users: breakerPolicy },
      instanceId: `gw-${index}`,
      now: clock.now,
      random: seededRandom(index + 1),
      syncIntervalMs: SYNC_MS,
      kvTimeoutMs: 2000,
      probeLeaseMs: extra.probeLeaseMs ?? 5000,
      onTransition: (event) => events.push(event),
      reopenKv: extra.reopen ? () => Deno.openKv(file.path) : undefined,
      reopenIntervalMs: 20,
      // These tests send failures back to back; the hold-back has tests of its own.
      holdBack: extra.holdBack ?? false,
    });
    await breaker.start();
    instances.push({ breaker, kv, events });
  }
  return {
    clock,
    path: file.path,
    instances,
    async close() {
      for (const instance of instances) await instance.breaker.close();
      for (const instance of instances) {
        try {
          instance.kv.close();
        } catch {
          // closed by the test
        }
      }
      await file.remove();
    },
  };
}

/** Trips the fleet from instance `index` with threshold failures and waits for the record. */
async function tripFrom(fleet: Fleet, index: number, failures: number): Promise<void> {
  const { breaker } = fleet.instances[index];
  for (let failure = 0; failure < failures; failure++) {
    breaker.record("users", allowed(breaker.admit("users")), FAIL);
  }
  await waitFor(
    () => breaker.view("users").state === "open" && breaker.view("users").generation > 0,
    { timeoutMs: 2000, what: "fleet trip" },
  );
}

Deno.test("shared: a trip on one instance is seen by the other within the sync interval", async () => {
  const fleet = await fleetOf(2, policy({ failureThreshold: 4, recoveryTimeoutMs: 10_000 }));
  try {
    const [a, b] = fleet.instances;
    await tripFrom(fleet, 0, 4);
    const trippedAt = performance.now();
    await waitFor(() => b.breaker.admit("users").allowed === false, {
      timeoutMs: 1000,
      what: "b rejects",
    });
    const lagMs = performance.now() - trippedAt;
    assert.ok(lagMs < SYNC_MS * 4, `b learned after ${lagMs.toFixed(1)} ms`);
    // b may reject on the fleet's pulse a moment before it adopts the fleet record itself.
    await waitFor(() => b.breaker.view("users").generation === 1, {
      timeoutMs: 1000,
      what: "b adopts the fleet record",
    });
    const viewB = b.breaker.view("users");
    assert.equal(viewB.state, "open");
    assert.deepEqual(
      { openedAt: viewB.openedAt, nextProbeAt: viewB.nextProbeAt, generation: viewB.generation },
      {
        openedAt: a.breaker.view("users").openedAt,
        nextProbeAt: a.breaker.view("users").nextProbeAt,
        generation: 1,
      },
    );
    assert.deepEqual(b.events.map((event) => `${event.from}->${event.to}`), ["closed->open"]);
  } finally {
    await fleet.close();
  }
});

Deno.test("shared: failures on both instances add up to one fleet trip", async () => {
  const fleet = await fleetOf(2, policy({ failureThreshold: 6 }));
  try {
    const [a, b] = fleet.instances;
    for (let failure = 0; failure < 3; failure++) {
      a.breaker.record("users", allowed(a.breaker.admit("users")), FAIL);
      b.breaker.record("users", allowed(b.breaker.admit("users")), FAIL);
    }
    // Neither instance alone reached 6; together they did.
    await waitFor(async () => {
      const stored = await a.kv.get<{ state: string }>(recordKey("users"));
      return stored.value?.state === "open";
    }, { timeoutMs: 2000, what: "fleet record open" });
    await waitFor(() => !a.breaker.admit("users").allowed && !b.breaker.admit("users").allowed, {
      timeoutMs: 1000,
      what: "both reject",
    });
    // Each may open on its own count first (a pulse, a read); both then take the fleet record.
    await waitFor(
      () => a.breaker.view("users").generation > 0 && b.breaker.view("users").generation > 0,
      { timeoutMs: 1000, what: "both on the fleet record" },
    );
    assert.equal(a.breaker.view("users").generation, 1, "exactly one transition");
    assert.equal(b.breaker.view("users").generation, 1);
  } finally {
    await fleet.close();
  }
});

Deno.test("shared: minInstances 2 keeps a lone instance's trip local", async () => {
  const fleet = await fleetOf(2, policy({ failureThreshold: 3, minInstances: 2 }));
  try {
    const [a, b] = fleet.instances;
    for (let failure = 0; failure < 5; failure++) {
      const admission = a.breaker.admit("users");
      if (admission.allowed) a.breaker.record("users", admission, FAIL);
    }
    assert.equal(a.breaker.admit("users").allowed, false, "a's own breaker opened");
    // Nothing to wait for: a fleet trip that must not happen gets three re-syncs to show up.
    await new Promise((resolve) => setTimeout(resolve, SYNC_MS * 3));
    assert.equal((await a.kv.get(recordKey("users"))).versionstamp, null, "no fleet trip");
    assert.equal(b.breaker.admit("users").allowed, true, "b keeps serving");
    // b now sees failures too: two reporters, the fleet trips. (b may know a's count from its
    // pulse already, and then opens at its first failure.)
    b.breaker.record("users", allowed(b.breaker.admit("users")), FAIL);
    for (let failure = 1; failure < 3; failure++) {
      const admission = b.breaker.admit("users");
      if (admission.allowed) b.breaker.record("users", admission, FAIL);
    }
    await waitFor(async () => {
      const stored = await b.kv.get<{ state: string }>(recordKey("users"));
      return stored.value?.state === "open";
    }, { timeoutMs: 2000, what: "fleet trip with quorum" });
  } finally {
    await fleet.close();
  }
});

Deno.test("shared: half-open admits exactly halfOpenProbes probes across instances", async () => {
  const fleet = await fleetOf(
    3,
    policy({ failureThreshold: 3, recoveryTimeoutMs: 1000, halfOpenProbes: 2 }),
  );
  try {
    await tripFrom(fleet, 0, 3);
    await waitFor(() =>
      fleet.instances.every((instance) => instance.breaker.view("users").state === "open")
    );
    fleet.clock.advance(1000);
    const probes: Array<[number, Admission & { allowed: true }]> = [];
    let rejectedHalfOpen = 0;
    // Every instance keeps asking for a while; leases are raced in the background.
    const until = performance.now() + 300;
    while (performance.now() < until) {
      for (const [index, instance] of fleet.instances.entries()) {
        const admission = instance.breaker.admit("users");
        if (admission.allowed) {
          assert.equal(admission.probe, true);
          probes.push([index, admission]);
        } else {
          assert.equal(admission.state, "half_open");
          rejectedHalfOpen++;
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    assert.equal(probes.length, 2, `probes from ${probes.map(([index]) => index)}`);
    assert.ok(rejectedHalfOpen > 0);
    // The first probe fails: the breaker re-opens for longer; the second probe's late success
    // belongs to the finished round and must not close it.
    const [[firstIndex, first], [secondIndex, second]] = probes;
    fleet.instances[firstIndex].breaker.record("users", first, FAIL);
    await waitFor(() => fleet.instances[firstIndex].breaker.view("users").openCount === 2);
    fleet.instances[secondIndex].breaker.record("users", second, OK);
    // Nothing to wait for: a close that must not happen gets three re-syncs to show up.
    await new Promise((resolve) => setTimeout(resolve, SYNC_MS * 3));
    for (const instance of fleet.instances) {
      const view = instance.breaker.view("users");
      assert.equal(view.state, "open");
      assert.equal(view.openCount, 2);
      const openForMs = view.nextProbeAt! - view.openedAt!;
      assert.ok(openForMs >= 1600 && openForMs <= 2000, `open for ${openForMs}`);
    }
  } finally {
    await fleet.close();
  }
});

Deno.test("shared: a probe's success closes the breaker for every instance", async () => {
  const fleet = await fleetOf(2, policy({ failureThreshold: 2, recoveryTimeoutMs: 500 }));
  try {
    const [a, b] = fleet.instances;
    await tripFrom(fleet, 0, 2);
    await waitFor(() => b.breaker.view("users").state === "open");
    fleet.clock.advance(500);
    let probe: Admission = b.breaker.admit("users");
    await waitFor(() => (probe = b.breaker.admit("users")).allowed, {
      timeoutMs: 1000,
      what: "b gets the lease",
    });
    b.breaker.record("users", allowed(probe), OK);
    await waitFor(() => a.breaker.admit("users").allowed && b.breaker.admit("users").allowed, {
      timeoutMs: 1000,
      what: "both closed",
    });
    assert.equal(a.breaker.view("users").generation, 2);
    assert.equal(a.breaker.view("users").failuresInWindow, 0);
    assert.deepEqual(a.events.map((event) => `${event.from}->${event.to}`), [
      "closed->open",
      "open->half_open",
      "half_open->closed",
    ]);
  } finally {
    await fleet.close();
  }
});

Deno.test("shared: a crashed prober's lease expires and another instance probes", async () => {
  const fleet = await fleetOf(2, policy({ failureThreshold: 2, recoveryTimeoutMs: 500 }), {
    probeLeaseMs: 3000,
  });
  try {
    const [a, b] = fleet.instances;
    await tripFrom(fleet, 0, 2);
    await waitFor(() => b.breaker.view("users").state === "open");
    fleet.clock.advance(500);
    await waitFor(() => a.breaker.admit("users").allowed, {
      timeoutMs: 1000,
      what: "a gets the lease",
    });
    // a "crashes" mid-probe: it never records the outcome.
    await a.breaker.close();
    for (let attempt = 0; attempt < 20; attempt++) {
      assert.equal(b.breaker.admit("users").allowed, false, "the lease is still a's");
      await new Promise((resolve) => setTimeout(resolve, 3));
    }
    fleet.clock.advance(3000);
    await waitFor(() => b.breaker.admit("users").allowed, {
      timeoutMs: 1000,
      what: "b takes the expired lease",
    });
  } finally {
    await fleet.close();
  }
});

Deno.test("shared: force open, close and reset reach the whole fleet", async () => {
  const fleet = await fleetOf(2, policy({ failureThreshold: 2 }));
  try {
    const [a, b] = fleet.instances;
    assert.equal((await a.breaker.force("users", "open")).state, "forced_open");
    await waitFor(() => b.breaker.view("users").state === "forced_open", {
      timeoutMs: 1000,
      what: "forced_open",
    });
    assert.equal(b.breaker.admit("users").allowed, false);
    await b.breaker.force("users", "close");
    await waitFor(() => a.breaker.view("users").state === "forced_closed", {
      timeoutMs: 1000,
      what: "forced_closed",
    });
    for (let failure = 0; failure < 5; failure++) {
      a.breaker.record("users", allowed(a.breaker.admit("users")), FAIL);
    }
    assert.equal(a.breaker.admit("users").allowed, true, "forced closed ignores failures");
    const reset = await a.breaker.force("users", "reset");
    assert.equal(reset.state, "closed");
    await waitFor(() => b.breaker.view("users").state === "closed", {
      timeoutMs: 1000,
      what: "reset",
    });
    assert.equal(b.breaker.view("users").generation, 3);
    assert.equal(b.breaker.view("users").degraded, false);
  } finally {
    await fleet.close();
  }
});

Deno.test("shared: KV handle closed mid-run -> degraded, local breaking, then rejoin", async () => {
  const fleet = await fleetOf(2, policy({ failureThreshold: 3, recoveryTimeoutMs: 10_000 }), {
    reopen: true,
  });
  try {
    const [a] = fleet.instances;
    // The owner closes a's handle: watch and re-sync fail, a goes degraded and reopens.
    a.kv.close();
    await waitFor(() => a.breaker.degraded(), { timeoutMs: 1000, what: "degraded" });
    await waitFor(() => !a.breaker.degraded(), {
      timeoutMs: 2000,
      what: "rejoined with a fresh handle",
    });
    // Meanwhile the fleet state still reaches it.
    await tripFrom(fleet, 1, 3);
    await waitFor(() => a.breaker.view("users").state === "open", {
      timeoutMs: 1000,
      what: "a adopts the trip",
    });
  } finally {
    await fleet.close();
  }
});

Deno.test("shared: without a way to reopen, a degraded instance keeps serving on its local breaker", async () => {
  const fleet = await fleetOf(2, policy({ failureThreshold: 3, recoveryTimeoutMs: 1000 }));
  try {
    const [a, b] = fleet.instances;
    await tripFrom(fleet, 1, 3);
    await waitFor(() => a.breaker.view("users").state === "open");
    a.kv.close();
    await waitFor(() => a.breaker.degraded(), { timeoutMs: 1000, what: "degraded" });
    // The fleet's outage continues locally; KV trouble does not close the breaker.
    assert.equal(a.breaker.view("users").state, "open");
    assert.equal(a.breaker.view("users").degraded, true);
    fleet.clock.advance(1000);
    const probe = allowed(a.breaker.admit("users"));
    assert.equal(probe.probe, true, "a local probe, no lease needed");
    a.breaker.record("users", probe, OK);
    assert.equal(a.breaker.view("users").state, "closed");
    // Requests keep flowing, failures still trip a's local breaker.
    for (let call = 0; call < 100; call++) {
      a.breaker.record("users", allowed(a.breaker.admit("users")), OK);
    }
    for (let failure = 0; failure < 3; failure++) {
      a.breaker.record("users", allowed(a.breaker.admit("users")), FAIL);
    }
    assert.equal(a.breaker.admit("users").allowed, false);
    // A force while degraded acts locally and says so.
    const forced = await a.breaker.force("users", "reset");
    assert.equal(forced.state, "closed");
    assert.equal(forced.degraded, true);
    assert.equal(b.breaker.degraded(), false, "b is unaffected");
  } finally {
    await fleet.close();
  }
});

Deno.test("shared: a KV call slower than kvTimeoutMs makes the instance degraded", async () => {
  const kv = await Deno.openKv(":memory:");
  let slow = false;
  const breaker = createFleetBreaker({
    kv,
    services: { users: policy({ failureThreshold: 2 }) },
    instanceId: "slow",
    syncIntervalMs: 10,
    kvTimeoutMs: 30,
    wrapStore: (store) => ({
      ...store,
      readRecords: async (names) => {
        if (slow) await new Promise((resolve) => setTimeout(resolve, 60));
        return store.readRecords(names);
      },
    }),
  });
  try {
    await breaker.start();
    assert.equal(breaker.degraded(), false);
    slow = true;
    await waitFor(() => breaker.degraded(), { timeoutMs: 1000, what: "degraded on slowness" });
    assert.equal(breaker.admit("users").allowed, true);
    slow = false;
    await waitFor(() => !breaker.degraded(), {
      timeoutMs: 1000,
      what: "rejoined when KV is fast again",
    });
  } finally {
    await breaker.close();
    kv.close();
  }
});
