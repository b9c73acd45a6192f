/**
 * The fleet view's rules (src/breaker/fleet_view.ts) on a manual clock, and its heartbeats on
 * real Deno KV: alive, silent after three periods without a heartbeat, stopped after a clean
 * stop (unless another breaker of the same instance wrote after), degraded periods carried.
 */
import assert from "node:assert/strict";
import {
  beat,
  createHeartbeatState,
  describeFleet,
  type Heartbeat,
  markStopped,
  noteDegraded,
  parseHeartbeat,
  readHeartbeats,
} from "../../src/breaker/fleet_view.ts";
import { createFleetBreaker } from "../../src/breaker/fleet.ts";
import { waitFor } from "../_helpers/wait.ts";
import { policy, tempKvPath } from "../breaker/_helpers.ts";

const random = () => 0.5;

Deno.test("fleet view: alive within three periods, then silent; this instance from memory", () => {
  const state = createHeartbeatState("self", ["users"], 1_000, 2_000);
  const other = (instanceId: string, atMs: number, stoppedAtMs: number | null = null) => ({
    instanceId,
    atMs,
    startedAtMs: 0,
    services: ["users"],
    degradedCount: 0,
    lastDegraded: null,
    stoppedAtMs,
  });
  const beats: Heartbeat[] = [
    other("z-silent", 10_000 - 6_001),
    other("b-alive", 10_000 - 6_000),
    other("a-stopped", 9_000, 9_000),
    other("self", 1_000), // our own old heartbeat: memory wins
  ];
  const view = describeFleet(beats, state, false, 10_000);
  assert.equal(view.known, true);
  assert.deepEqual(
    view.members.map((m) => [m.instanceId, m.status, m.self, m.degraded]),
    [
      ["self", "alive", true, false],
      ["b-alive", "alive", false, false],
      ["z-silent", "silent", false, null],
      ["a-stopped", "stopped", false, null],
    ],
  );
  assert.equal(view.members[2].heartbeatAgeMs, 6_001);

  // Degraded: KV could not be read; only this instance, with since when.
  noteDegraded(state, true, 11_000);
  noteDegraded(state, true, 11_500); // still the same period
  const cut = describeFleet(null, state, true, 12_000);
  assert.equal(cut.known, false);
  assert.deepEqual(cut.members.map((m) => [m.instanceId, m.degraded, m.degradedSinceMs]), [
    ["self", true, 11_000],
  ]);
  // Rejoined: the period is kept for the next heartbeat, and that one is due at once.
  noteDegraded(state, false, 14_000);
  assert.deepEqual(state.lastDegraded, { fromMs: 11_000, toMs: 14_000 });
  assert.equal(state.degradedCount, 1);
  assert.equal(state.nextAtMs, -Infinity);
});

Deno.test("fleet view: a heartbeat of another version is skipped or read with defaults", () => {
  assert.equal(parseHeartbeat("x", null), null);
  assert.equal(parseHeartbeat(7, { atMs: 1, startedAtMs: 1 }), null);
  assert.equal(parseHeartbeat("x", { atMs: "soon", startedAtMs: 1 }), null);
  assert.deepEqual(parseHeartbeat("x", { atMs: 5, startedAtMs: 1, services: ["a", 3] }), {
    instanceId: "x",
    atMs: 5,
    startedAtMs: 1,
    services: ["a"],
    degradedCount: 0,
    lastDegraded: null,
    stoppedAtMs: null,
  });
});

Deno.test("heartbeats on KV: one write per period, stop marked only over our own write", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const first = createHeartbeatState("gw-1", ["users"], 100, 2_000);
    await beat(first, kv, 1_000, random);
    await beat(first, kv, 2_000, random); // within the period: no write
    assert.deepEqual((await readHeartbeats(kv, random)).map((h) => [h.instanceId, h.atMs]), [
      ["gw-1", 1_000],
    ]);
    await beat(first, kv, 3_000, random);
    assert.equal((await readHeartbeats(kv, random))[0].atMs, 3_000);

    // A reload built a second breaker for the same instance, which wrote after the first:
    // the first one's stop must not mark the instance stopped.
    const second = createHeartbeatState("gw-1", ["users", "orders"], 2_500, 2_000);
    await beat(second, kv, 3_500, random);
    await markStopped(first, kv, 4_000, random);
    const [alive] = await readHeartbeats(kv, random);
    assert.equal(alive.stoppedAtMs, null);
    assert.deepEqual(alive.services, ["users", "orders"]);
    // The last one stops cleanly.
    await markStopped(second, kv, 5_000, random);
    const [stopped] = await readHeartbeats(kv, random);
    assert.equal(stopped.stoppedAtMs, 5_000);
    assert.equal(describeFleet([stopped], first, false, 5_000).members[0].self, true);
  } finally {
    kv.close();
  }
});

Deno.test("fleet view on a shared KV file: an instance cut off from KV goes silent, then carries its degraded period", async () => {
  const { path, remove } = await tempKvPath();
  const kv = await Deno.openKv(path);
  const services = { users: policy() };
  const timing = { syncIntervalMs: 20, heartbeatIntervalMs: 50, reopenIntervalMs: 20 };
  const a = createFleetBreaker({ kv, services, instanceId: "a", ...timing });
  // b opens its own handles, so the test can take KV away from b alone.
  let blocked = false;
  const handles: Deno.Kv[] = [];
  const b = createFleetBreaker({
    kv: null,
    reopenKv: async () => {
      if (blocked) throw new Error("KV unreachable (test)");
      const handle = await Deno.openKv(path);
      handles.push(handle);
      return handle;
    },
    services,
    instanceId: "b",
    ...timing,
  });
  const memberB = async () => (await a.fleet()).members.find((m) => m.instanceId === "b");
  try {
    await Promise.all([a.start(), b.start()]);
    await waitFor(async () => (await memberB())?.status === "alive", { what: "b alive" });

    blocked = true;
    handles.at(-1)!.close();
    await waitFor(() => b.degraded(), { what: "b degraded" });
    const cut = await b.fleet();
    assert.equal(cut.known, false);
    assert.deepEqual(cut.members.map((m) => [m.instanceId, m.self, m.degraded]), [
      ["b", true, true],
    ]);
    assert.ok(Number.isFinite(cut.members[0].degradedSinceMs));
    // a hears nothing from b: silent after three periods, degraded unknown.
    await waitFor(async () => (await memberB())?.status === "silent", { what: "b silent" });
    assert.equal((await memberB())?.degraded, null);

    blocked = false;
    await waitFor(() => !b.degraded(), { what: "b rejoined" });
    await waitFor(async () => (await memberB())?.status === "alive", { what: "b alive again" });
    const back = (await memberB())!;
    assert.equal(back.degradedCount, 1);
    assert.ok(back.lastDegraded !== null);
    assert.ok(back.lastDegraded.toMs >= back.lastDegraded.fromMs);
  } finally {
    await a.close();
    await b.close();
    kv.close();
    await remove();
  }
});
