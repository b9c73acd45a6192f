/**
 * The workers' breaker mirror against the main thread's host and a real fleet breaker (local
 * mode), wired in one isolate: the messages are the ones `postMessage` would carry, delivered
 * synchronously, so every step is deterministic.
 */
import assert from "node:assert/strict";
import { createFleetBreaker } from "../../src/breaker/fleet.ts";
import type { Admission, FleetBreaker } from "../../src/breaker/mod.ts";
import { createBreakerHost } from "../../src/workers/breaker_host.ts";
import { createMirrorHub, type MirrorHub } from "../../src/workers/mirror_breaker.ts";
import type { FromWorker, ToWorker } from "../../src/workers/protocol.ts";
import { manualClock, policy, seededRandom } from "../breaker/_helpers.ts";
import { waitFor } from "../_helpers/wait.ts";

const FAIL = { status: 503, durationMs: 5 };
const OK = { status: 200, durationMs: 5 };

function allowed(admission: Admission): Admission & { allowed: true } {
  assert.equal(admission.allowed, true, JSON.stringify(admission));
  return admission as Admission & { allowed: true };
}

/** Two workers' hubs and the host over one real breaker, messages delivered at once. */
function instance(policyOverrides = {}) {
  return wire(manualClock(), policyOverrides);
}

/** {@link instance} on any clock (the real one where a timer must fire). */
function wire<Clock extends { now: () => number }>(clock: Clock, policyOverrides = {}) {
  const services = {
    users: policy({ failureThreshold: 3, recoveryTimeoutMs: 1000, ...policyOverrides }),
  };
  const real: FleetBreaker = createFleetBreaker({
    kv: null,
    services,
    instanceId: "one-instance",
    now: clock.now,
    random: seededRandom(),
  });
  const sent: FromWorker[] = [];
  const hubs: MirrorHub[] = [];
  const deliver = (index: number, message: ToWorker) => {
    const hub = hubs[index];
    if (message.type === "breakers") hub.publish(message.entries, message.degraded);
    if (message.type === "probe") hub.grant(message.service, message.token, message.generation);
  };
  const host = createBreakerHost({
    breaker: () => real,
    postTo: deliver,
    broadcast: (message) => hubs.forEach((_, index) => deliver(index, message)),
    now: clock.now,
  });
  for (let index = 0; index < 2; index++) {
    hubs.push(createMirrorHub({
      post: (message) => {
        sent.push(message);
        host.handle(index, message);
      },
      now: clock.now,
    }));
  }
  const workers = hubs.map((hub) => hub.breakerFor(services));
  for (let index = 0; index < 2; index++) deliver(index, host.snapshot());
  return {
    clock,
    real,
    host,
    hubs,
    workers,
    sent,
    close() {
      hubs.forEach((hub) => hub.close());
      host.close();
      return real.close();
    },
  };
}

Deno.test("mirror: failures at both workers trip the one breaker; both refuse at once", async () => {
  const it = instance();
  try {
    await Promise.all(it.workers.map((worker) => worker.start()));
    const [a, b] = it.workers;
    a.record("users", allowed(a.admit("users")), FAIL);
    b.record("users", allowed(b.admit("users")), FAIL);
    assert.equal(it.real.view("users").failuresInWindow, 2, "both counted by the one breaker");
    a.record("users", allowed(a.admit("users")), FAIL);
    // The trip was published with the failure that caused it: no timer, no KV round trip.
    for (const worker of it.workers) {
      const refused = worker.admit("users");
      assert.equal(refused.allowed, false);
      assert.equal(!refused.allowed && refused.state, "open");
      assert.equal(worker.view("users").state, "open");
    }
  } finally {
    await it.close();
  }
});

Deno.test("mirror: successes send nothing per request, only a busy flag with the stats", async () => {
  const it = instance();
  try {
    const [a] = it.workers;
    for (let i = 0; i < 100; i++) a.record("users", allowed(a.admit("users")), OK);
    assert.equal(it.sent.length, 0);
    assert.deepEqual(it.hubs[0].takeBusy(), ["users"]);
    assert.deepEqual(it.hubs[0].takeBusy(), []);
  } finally {
    await it.close();
  }
});

Deno.test("mirror: a slow call is a failure when slowCallMs says so, decided in the worker", async () => {
  const it = instance({ slowCallMs: 100 });
  try {
    const [a] = it.workers;
    a.record("users", allowed(a.admit("users")), { status: 200, durationMs: 250 });
    assert.deepEqual(it.sent.map((message) => message.type), ["failure"]);
    assert.equal(it.real.view("users").failuresInWindow, 1);
  } finally {
    await it.close();
  }
});

Deno.test("mirror: half-open grants one probe to one asking worker; its success closes for both", async () => {
  const it = instance();
  try {
    const [a, b] = it.workers;
    for (let i = 0; i < 3; i++) a.record("users", allowed(a.admit("users")), FAIL);
    it.clock.advance(1001);
    // Probe time: each worker asks, the host grants the real breaker's one probe.
    const firstA = a.admit("users");
    const firstB = b.admit("users");
    assert.equal(firstA.allowed, false);
    assert.equal(!firstA.allowed && firstA.state, "half_open");
    assert.equal(firstB.allowed, false);
    const probe = allowed(a.admit("users"));
    assert.equal(probe.probe, true);
    assert.equal(b.admit("users").allowed, false, "one probe per round, not one per worker");
    assert.equal(a.admit("users").allowed, false, "not two for the same worker either");
    a.record("users", probe, OK);
    assert.equal(it.real.view("users").state, "closed");
    for (const worker of it.workers) assert.equal(allowed(worker.admit("users")).probe, false);
  } finally {
    await it.close();
  }
});

Deno.test("mirror: a probe a worker does not use is handed back and another worker probes", async () => {
  const it = instance();
  try {
    const [a, b] = it.workers;
    for (let i = 0; i < 3; i++) a.record("users", allowed(a.admit("users")), FAIL);
    it.clock.advance(1001);
    a.admit("users"); // asks; granted at once
    // Worker a crashed before using it: the host releases its probe.
    it.host.forget(0);
    b.admit("users"); // asks
    const probe = allowed(b.admit("users"));
    assert.equal(probe.probe, true);
    b.record("users", probe, FAIL);
    assert.equal(it.real.view("users").state, "open", "the failed probe re-opened it");
    assert.equal(b.admit("users").allowed, false);
  } finally {
    await it.close();
  }
});

Deno.test("mirror: a worker that refused while open asks at the probe time; its next request is the probe", async () => {
  // Real time: the ask is a timer set for the probe time (40 ms after the trip).
  const it = wire({ now: () => Date.now() }, { recoveryTimeoutMs: 40 });
  const wants = () => it.sent.filter((message) => message.type === "want-probe");
  try {
    const [a, b] = it.workers;
    for (let i = 0; i < 3; i++) a.record("users", allowed(a.admit("users")), FAIL);
    const refused = a.admit("users");
    assert.equal(refused.allowed, false);
    assert.equal(!refused.allowed && refused.state, "open");
    assert.equal(wants().length, 0, "nothing asked before the probe time");
    await waitFor(() => wants().length > 0, { timeoutMs: 2000, what: "the ask at the probe time" });
    assert.equal(wants().length, 1, "only the worker that had traffic asked");
    // The grant came back at once: the first request after the probe time is the probe.
    const probe = allowed(a.admit("users"));
    assert.equal(probe.probe, true);
    assert.equal(b.admit("users").allowed, false, "still one probe per round");
    a.record("users", probe, OK);
    assert.equal(it.real.view("users").state, "closed");
  } finally {
    await it.close();
  }
});

Deno.test("mirror: an ask scheduled for a probe time is dropped when the breaker closes first", async () => {
  const it = wire({ now: () => Date.now() }, { recoveryTimeoutMs: 40 });
  try {
    const [a] = it.workers;
    for (let i = 0; i < 3; i++) a.record("users", allowed(a.admit("users")), FAIL);
    assert.equal(a.admit("users").allowed, false); // schedules the ask
    await it.real.force("users", "reset");
    await waitFor(() => a.admit("users").allowed, { timeoutMs: 2000, what: "the reset published" });
    const probeAtMs = Date.now() + 80;
    await waitFor(() => Date.now() > probeAtMs, { timeoutMs: 2000 });
    assert.equal(it.sent.filter((message) => message.type === "want-probe").length, 0);
  } finally {
    await it.close();
  }
});
