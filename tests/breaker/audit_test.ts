/**
 * The audit timeline on real Deno KV: operator actions with their caller label, and the fleet's
 * own transitions (trip, probe, reopen, close) with the instance that made them, newest first.
 */
import assert from "node:assert/strict";
import { type AuditEntry, cleanLabel, MAX_LABEL_LENGTH } from "../../src/breaker/audit.ts";
import { createFleetBreaker, type FleetBreaker } from "../../src/breaker/fleet.ts";
import type { Admission } from "../../src/breaker/types.ts";
import { waitFor } from "../_helpers/wait.ts";
import {
  allowed,
  type ManualClock,
  manualClock,
  policy,
  seededRandom,
  tempKvPath,
} from "./_helpers.ts";

const FAIL = { status: 503, durationMs: 2 };
const OK = { status: 200, durationMs: 2 };

interface Instance {
  breaker: FleetBreaker;
  logged: AuditEntry[];
}

function instance(
  kv: Deno.Kv | null,
  instanceId: string,
  clock: ManualClock,
  extra: { auditRetentionMs?: number } = {},
): Instance {
  const logged: AuditEntry[] = [];
  const breaker = createFleetBreaker({
    kv,
    services: {
      users: policy({ failureThreshold: 2, recoveryTimeoutMs: 1000 }),
      orders: policy(),
    },
    instanceId,
    now: clock.now,
    random: seededRandom(),
    syncIntervalMs: 20,
    holdBack: false,
    onAudit: (entry) => logged.push(entry),
    auditRetentionMs: extra.auditRetentionMs,
  });
  return { breaker, logged };
}

/** Asks until the breaker hands out a probe slot (the lease race runs in the background). */
async function probeSlot(breaker: FleetBreaker): Promise<Admission & { allowed: true }> {
  let admission: Admission = breaker.admit("users");
  await waitFor(() => (admission = breaker.admit("users")).allowed, { what: "a probe slot" });
  assert.equal(admission.allowed && admission.probe, true);
  return admission as Admission & { allowed: true };
}

const summary = (entries: AuditEntry[]) =>
  entries.map((entry) => `${entry.service} ${entry.kind} ${entry.instanceId} ${entry.by}`);

Deno.test("audit: force is recorded fleet-wide with its caller label, newest first", async () => {
  const kv = await Deno.openKv(":memory:");
  const clock = manualClock();
  const { breaker, logged } = instance(kv, "gw-1", clock);
  try {
    await breaker.start();
    await breaker.force("users", "open", { by: "alice" });
    clock.advance(10);
    await breaker.force("orders", "close");
    clock.advance(10);
    await breaker.force("users", "reset", { by: "deploy-bot" });
    const all = await breaker.audit();
    assert.deepEqual(summary(all), [
      "users reset gw-1 deploy-bot",
      "orders force_close gw-1 admin",
      "users force_open gw-1 alice",
    ]);
    assert.deepEqual(all[2], {
      atMs: clock.now() - 20,
      service: "users",
      kind: "force_open",
      instanceId: "gw-1",
      by: "alice",
      from: "closed",
      to: "forced_open",
      generation: 1,
      fleet: true,
    });
    assert.deepEqual(summary(await breaker.audit("users")), [
      "users reset gw-1 deploy-bot",
      "users force_open gw-1 alice",
    ]);
    assert.deepEqual(summary(await breaker.audit(undefined, 1)), ["users reset gw-1 deploy-bot"]);
    assert.deepEqual(summary(logged).reverse(), summary(all), "every entry was logged");
    await assert.rejects(() => breaker.audit("nope"), /unknown service/);
  } finally {
    await breaker.close();
    kv.close();
  }
});

Deno.test("audit: trip, probe, reopen and close name the instance that made them", async () => {
  const file = await tempKvPath();
  const kvA = await Deno.openKv(file.path);
  const kvB = await Deno.openKv(file.path);
  const clock = manualClock();
  const a = instance(kvA, "gw-a", clock);
  const b = instance(kvB, "gw-b", clock);
  try {
    await a.breaker.start();
    await b.breaker.start();
    a.breaker.record("users", allowed(a.breaker.admit("users")), FAIL);
    a.breaker.record("users", allowed(a.breaker.admit("users")), FAIL);
    await waitFor(() => b.breaker.view("users").state === "open", { what: "b sees the trip" });
    // b may reject on a's pulse before the fleet record exists; the record's probe time is set
    // when it is written, so the manual clock moves only once both hold the record.
    await waitFor(
      () => a.breaker.view("users").generation === 1 && b.breaker.view("users").generation === 1,
      { what: "both adopt the fleet record" },
    );
    // Half-open: only b asks, so b wins the probe slot; its probe fails (reopen)...
    clock.advance(1000);
    const probe = await probeSlot(b.breaker);
    clock.advance(1);
    b.breaker.record("users", probe, FAIL);
    await waitFor(() => a.breaker.view("users").openCount === 2, { what: "a sees the reopen" });
    // ...then a probes and succeeds (close).
    clock.advance(5000);
    const second = await probeSlot(a.breaker);
    clock.advance(1);
    a.breaker.record("users", second, OK);
    await waitFor(() => b.breaker.view("users").state === "closed", { what: "b sees the close" });
    const timeline = await b.breaker.audit("users");
    // Either instance may open the fleet record: a from its own report, b from a's pulse.
    const tripper = timeline.at(-1)!.instanceId;
    assert.ok(["gw-a", "gw-b"].includes(tripper));
    assert.deepEqual(summary(timeline), [
      "users close gw-a null",
      "users probe gw-a null",
      "users reopen gw-b null",
      "users probe gw-b null",
      `users trip ${tripper} null`,
    ]);
    assert.deepEqual(timeline.map((entry) => `${entry.from}->${entry.to}`), [
      "open->closed",
      "open->half_open",
      "open->open",
      "open->half_open",
      "closed->open",
    ]);
    assert.deepEqual(summary(b.logged).filter((line) => !line.includes("trip")), [
      "users probe gw-b null",
      "users reopen gw-b null",
    ], "each instance logs what it made");
  } finally {
    await a.breaker.close();
    await b.breaker.close();
    kvA.close();
    kvB.close();
    await file.remove();
  }
});

Deno.test("audit: two instances racing one trip leave exactly one trip entry", async () => {
  const file = await tempKvPath();
  const handles = await Promise.all([0, 1, 2].map(() => Deno.openKv(file.path)));
  const clock = manualClock();
  const fleet = handles.map((kv, index) => instance(kv, `gw-${index}`, clock));
  try {
    for (const member of fleet) await member.breaker.start();
    for (const member of fleet) {
      member.breaker.record("users", allowed(member.breaker.admit("users")), FAIL);
    }
    await waitFor(() => fleet.every((member) => member.breaker.view("users").generation === 1), {
      what: "every instance sees the fleet trip",
    });
    const trips = (await fleet[0].breaker.audit("users")).filter((entry) => entry.kind === "trip");
    assert.equal(trips.length, 1);
    assert.equal(fleet.flatMap((member) => member.logged).length, 1, "one instance logged it");
  } finally {
    for (const member of fleet) await member.breaker.close();
    for (const kv of handles) kv.close();
    await file.remove();
  }
});

Deno.test("audit: entries past the retention are not shown", async () => {
  const kv = await Deno.openKv(":memory:");
  const clock = manualClock();
  const { breaker } = instance(kv, "gw-1", clock, { auditRetentionMs: 60_000 });
  try {
    await breaker.start();
    await breaker.force("users", "open", { by: "old" });
    clock.advance(60_001);
    await breaker.force("users", "reset", { by: "new" });
    assert.deepEqual(summary(await breaker.audit()), ["users reset gw-1 new"]);
  } finally {
    await breaker.close();
    kv.close();
  }
});

Deno.test("audit: without KV a force applies locally, is logged, and audit() shows it", async () => {
  const clock = manualClock();
  const { breaker, logged } = instance(null, "solo", clock);
  await breaker.start();
  await breaker.force("users", "open", { by: "bob" });
  assert.equal(logged.length, 1);
  assert.equal(logged[0].fleet, false);
  assert.deepEqual(summary(await breaker.audit("users")), ["users force_open solo bob"]);
  assert.deepEqual(await breaker.audit("orders"), []);
  await breaker.close();
});

Deno.test("audit: caller labels are cleaned and bounded", () => {
  assert.equal(cleanLabel(undefined), "admin");
  assert.equal(cleanLabel("   "), "admin");
  assert.equal(cleanLabel(" ops\n\u0000team "), "opsteam");
  assert.equal(cleanLabel("x".repeat(500)).length, MAX_LABEL_LENGTH);
});
