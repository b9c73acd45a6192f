/**
 * One fleet breaker: local mode (kv: null) and a single instance on real KV.
 */
import assert from "node:assert/strict";
import { createFleetBreaker, type FleetBreaker } from "../../src/breaker/fleet.ts";
import { createKvBreakerStore, recordKey } from "../../src/breaker/kv_store.ts";
import type { TransitionEvent } from "../../src/breaker/types.ts";
import {
  allowed,
  type CallCounts,
  countingStore,
  manualClock,
  policy,
  seededRandom,
} from "./_helpers.ts";
import { waitFor } from "../_helpers/wait.ts";

const FAIL = { status: 503, durationMs: 5 };
const OK = { status: 200, durationMs: 5 };

function localBreaker(overrides = {}) {
  const clock = manualClock();
  const events: TransitionEvent[] = [];
  const breaker = createFleetBreaker({
    kv: null,
    services: {
      users: policy({ failureThreshold: 3, recoveryTimeoutMs: 1000, ...overrides }),
      orders: policy(),
    },
    instanceId: "solo",
    now: clock.now,
    random: seededRandom(),
    onTransition: (event) => events.push(event),
  });
  return { clock, events, breaker };
}

Deno.test("fleet (local): trips exactly at the threshold and rejects with Retry-After", async () => {
  const { clock, breaker } = localBreaker();
  await breaker.start();
  for (let failure = 1; failure <= 2; failure++) {
    breaker.record("users", allowed(breaker.admit("users")), FAIL);
    assert.equal(breaker.view("users").state, "closed", `after ${failure}`);
  }
  assert.equal(breaker.view("users").failuresInWindow, 2);
  breaker.record("users", allowed(breaker.admit("users")), FAIL);
  const rejected = breaker.admit("users");
  assert.deepEqual(rejected, { allowed: false, retryAfterMs: 1000, state: "open" });
  clock.advance(400);
  assert.deepEqual(breaker.admit("users"), { allowed: false, retryAfterMs: 600, state: "open" });
  assert.equal(breaker.admit("orders").allowed, true, "other services are not affected");
  const view = breaker.view("users");
  assert.equal(view.openedAt, clock.now() - 400);
  assert.equal(view.nextProbeAt, clock.now() + 600);
  assert.equal(view.openCount, 1);
  assert.equal(view.degraded, false);
  await breaker.close();
});

Deno.test("fleet (local): 4xx, successes and aborted calls do not count", async () => {
  const { breaker } = localBreaker();
  for (let call = 0; call < 20; call++) {
    breaker.record("users", allowed(breaker.admit("users")), { status: 404, durationMs: 1 });
    breaker.record("users", allowed(breaker.admit("users")), OK);
    breaker.record("users", allowed(breaker.admit("users")), { error: "aborted", durationMs: 1 });
  }
  assert.equal(breaker.view("users").failuresInWindow, 0);
  assert.equal(breaker.view("users").state, "closed");
  await breaker.close();
});

Deno.test("fleet (local): failures older than windowMs fall out of the count", async () => {
  const { clock, breaker } = localBreaker({ windowMs: 1000 });
  breaker.record("users", allowed(breaker.admit("users")), FAIL);
  breaker.record("users", allowed(breaker.admit("users")), FAIL);
  clock.advance(1000);
  breaker.record("users", allowed(breaker.admit("users")), FAIL);
  assert.equal(breaker.view("users").state, "closed");
  assert.equal(breaker.view("users").failuresInWindow, 1);
  await breaker.close();
});

Deno.test("fleet (local): half-open lets halfOpenProbes through; success closes", async () => {
  const { clock, events, breaker } = localBreaker({ halfOpenProbes: 2 });
  for (let failure = 0; failure < 3; failure++) {
    breaker.record("users", allowed(breaker.admit("users")), FAIL);
  }
  clock.advance(1000);
  const first = allowed(breaker.admit("users"));
  const second = allowed(breaker.admit("users"));
  assert.equal(first.probe, true);
  assert.equal(second.probe, true);
  assert.deepEqual(breaker.admit("users"), {
    allowed: false,
    retryAfterMs: 1000,
    state: "half_open",
  });
  breaker.record("users", first, OK);
  assert.equal(breaker.view("users").state, "closed");
  breaker.record("users", second, FAIL); // belongs to the finished round: ignored
  assert.equal(breaker.view("users").state, "closed");
  assert.equal(breaker.view("users").failuresInWindow, 0, "a new generation counts from zero");
  assert.deepEqual(events.map((event) => `${event.from}->${event.to}`), [
    "closed->open",
    "open->half_open",
    "half_open->closed",
  ]);
  await breaker.close();
});

Deno.test("fleet (local): a failed probe re-opens for longer; an aborted probe frees its slot", async () => {
  const { clock, breaker } = localBreaker();
  for (let failure = 0; failure < 3; failure++) {
    breaker.record("users", allowed(breaker.admit("users")), FAIL);
  }
  clock.advance(1000);
  const aborted = allowed(breaker.admit("users"));
  assert.equal(breaker.admit("users").allowed, false, "one probe slot");
  breaker.record("users", aborted, { error: "aborted", durationMs: 3 });
  assert.equal(breaker.view("users").state, "half_open", "the client left: nothing learned");
  const probe = allowed(breaker.admit("users"));
  assert.equal(probe.probe, true);
  breaker.record("users", probe, { error: "timeout", durationMs: 1000 });
  const view = breaker.view("users");
  assert.equal(view.state, "open");
  assert.equal(view.openCount, 2);
  const openForMs = view.nextProbeAt! - view.openedAt!;
  assert.ok(openForMs >= 1600 && openForMs <= 2000, `open for ${openForMs}`);
  await breaker.close();
});

Deno.test("fleet (local): outcomes of requests admitted before a transition are ignored", async () => {
  const { clock, breaker } = localBreaker();
  const early = Array.from({ length: 6 }, () => allowed(breaker.admit("users")));
  for (const admission of early.slice(0, 3)) breaker.record("users", admission, FAIL);
  assert.equal(breaker.view("users").state, "open");
  clock.advance(1000);
  const probe = allowed(breaker.admit("users"));
  breaker.record("users", probe, OK);
  // Three stragglers from the old generation fail now: they must not re-open the new one.
  for (const admission of early.slice(3)) breaker.record("users", admission, FAIL);
  assert.equal(breaker.view("users").state, "closed");
  assert.equal(breaker.view("users").failuresInWindow, 0);
  await breaker.close();
});

Deno.test("fleet (local): force open, close and reset", async () => {
  const { breaker } = localBreaker();
  assert.equal((await breaker.force("users", "open")).state, "forced_open");
  assert.deepEqual(breaker.admit("users"), {
    allowed: false,
    retryAfterMs: 1000,
    state: "forced_open",
  });
  assert.equal((await breaker.force("users", "close")).state, "forced_closed");
  for (let failure = 0; failure < 10; failure++) {
    breaker.record("users", allowed(breaker.admit("users")), FAIL);
  }
  assert.equal(breaker.view("users").state, "forced_closed", "failures do not open it");
  const reset = await breaker.force("users", "reset");
  assert.equal(reset.state, "closed");
  assert.equal(reset.failuresInWindow, 0);
  await assert.rejects(() => breaker.force("nope", "open"), /unknown service/);
  assert.throws(() => breaker.admit("nope"), /unknown service/);
  breaker.record("nope", { allowed: true, probe: false, generation: 0 }, FAIL); // no throw
  await breaker.close();
});

Deno.test("fleet (local): clock jumping back an hour while open does not wedge it", async () => {
  const { clock, breaker } = localBreaker();
  for (let failure = 0; failure < 3; failure++) {
    breaker.record("users", allowed(breaker.admit("users")), FAIL);
  }
  clock.advance(-3_600_000);
  const probe = allowed(breaker.admit("users"));
  assert.equal(probe.probe, true, "one probe decides instead of waiting out the jump");
  breaker.record("users", probe, FAIL);
  const view = breaker.view("users");
  assert.equal(view.state, "open");
  assert.equal(view.openedAt, clock.now(), "re-anchored on the new clock");
  clock.advance(view.nextProbeAt! - clock.now());
  assert.equal(breaker.view("users").state, "half_open");
  await breaker.close();
});

Deno.test("fleet (local): views() lists every service; close() is idempotent", async () => {
  const { breaker } = localBreaker();
  assert.deepEqual(breaker.views().map((view) => view.service), ["users", "orders"]);
  await Promise.all([breaker.close(), breaker.close()]);
  await breaker.close();
});

// ---- one instance on real KV -------------------------------------------------------------

async function kvBreaker(kv: Deno.Kv, counts: CallCounts, overrides = {}) {
  const clock = manualClock();
  const breaker: FleetBreaker = createFleetBreaker({
    kv,
    services: { users: policy({ failureThreshold: 3, recoveryTimeoutMs: 1000, ...overrides }) },
    instanceId: "gw-1",
    now: clock.now,
    random: seededRandom(),
    syncIntervalMs: 20,
    wrapStore: (store) => countingStore(store, counts),
  });
  await breaker.start();
  return { clock, breaker };
}

Deno.test("fleet (KV): successes write nothing to KV", async () => {
  const kv = await Deno.openKv(":memory:");
  const counts: CallCounts = {};
  const { breaker } = await kvBreaker(kv, counts);
  for (let call = 0; call < 500; call++) {
    breaker.record("users", allowed(breaker.admit("users")), OK);
    breaker.record("users", allowed(breaker.admit("users")), { status: 404, durationMs: 1 });
  }
  await waitFor(() => (counts.readRecords ?? 0) >= 3, { what: "start-up read and two re-syncs" });
  await breaker.close();
  kv.close();
  const writes = ["transition", "reportFailures", "acquireLease", "releaseLease"];
  for (const method of writes) assert.equal(counts[method] ?? 0, 0, method);
});

Deno.test("fleet (KV): failures are reported coalesced and the fleet record trips", async () => {
  const kv = await Deno.openKv(":memory:");
  const counts: CallCounts = {};
  const { breaker } = await kvBreaker(kv, counts, { failureThreshold: 50 });
  const admissions = Array.from({ length: 50 }, () => allowed(breaker.admit("users")));
  for (const admission of admissions) breaker.record("users", admission, FAIL);
  await waitFor(async () => (await kv.get(recordKey("users"))).versionstamp !== null);
  const stored = (await kv.get<{ state: string; generation: number }>(recordKey("users"))).value!;
  assert.equal(stored.state, "open");
  assert.equal(stored.generation, 1);
  assert.ok(counts.reportFailures! < 50, `coalesced: ${counts.reportFailures} reports`);
  assert.equal(breaker.view("users").state, "open");
  assert.equal(breaker.view("users").generation, 1);
  await breaker.close();
  kv.close();
});

Deno.test("fleet (KV): start() takes the fleet's state before serving", async () => {
  const kv = await Deno.openKv(":memory:");
  const clock = manualClock();
  const writer = createKvBreakerStore(kv, { instanceId: "other" });
  await writer.transition("users", () => ({
    state: "open",
    generation: 4,
    openedAt: clock.now(),
    probeAt: clock.now() + 5000,
    openCount: 1,
  }));
  const breaker = createFleetBreaker({
    kv,
    services: { users: policy() },
    instanceId: "fresh",
    now: clock.now,
  });
  await breaker.start();
  assert.deepEqual(breaker.admit("users"), { allowed: false, retryAfterMs: 5000, state: "open" });
  assert.equal(breaker.view("users").generation, 4);
  await breaker.close();
  kv.close();
});

Deno.test("fleet (KV): a KV handle closed before start() means degraded, still serving", async () => {
  const kv = await Deno.openKv(":memory:");
  kv.close();
  const { breaker } = await kvBreaker(kv, {});
  assert.equal(breaker.degraded(), true);
  assert.equal(breaker.admit("users").allowed, true);
  for (let failure = 0; failure < 3; failure++) {
    breaker.record("users", allowed(breaker.admit("users")), FAIL);
  }
  assert.equal(breaker.admit("users").allowed, false, "the local breaker still trips");
  assert.equal(breaker.view("users").degraded, true);
  await breaker.close();
});
