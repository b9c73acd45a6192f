/**
 * The fleet breaker's parts on their own: the local breaker's rule for opening and its probe
 * slots, and the fleet counts (known total, one report round against real KV).
 */
import assert from "node:assert/strict";
import {
  addOwnFailure,
  createFleetCounts,
  fleetFailuresInWindow,
  knownTotalReached,
  noteWindowRead,
  reportRound,
  resetFleetCounts,
} from "../../src/breaker/fleet_counts.ts";
import { createKvBreakerStore } from "../../src/breaker/kv_store.ts";
import {
  countLocalFailure,
  createLocalBreaker,
  finishLocalProbe,
  restartLocal,
  setLocalRecord,
  startLocalProbe,
} from "../../src/breaker/local_breaker.ts";
import { INITIAL_RECORD, transition } from "../../src/breaker/policy.ts";
import { policy } from "./_helpers.ts";

const T0 = 1_700_000_000_000;

Deno.test("local breaker: says trip exactly at the threshold, only for its own generation", () => {
  const rules = policy({ failureThreshold: 3 });
  const local = createLocalBreaker();
  assert.equal(countLocalFailure(local, rules, 0, T0), false);
  assert.equal(countLocalFailure(local, rules, 7, T0), false, "another generation is ignored");
  assert.equal(countLocalFailure(local, rules, 0, T0 + 1), false);
  assert.equal(countLocalFailure(local, rules, 0, T0 + 2), true);
  assert.ok(setLocalRecord(local, transition(rules, local.record, { type: "trip" }, T0, 0.5)));
  assert.deepEqual(local.failures, [], "a new generation forgets the old failures");
  assert.equal(countLocalFailure(local, rules, local.record.generation, T0), false, "not closed");
  assert.equal(setLocalRecord(local, local.record), false, "the same record is no change");
  restartLocal(local, INITIAL_RECORD);
  assert.equal(local.record.state, "closed");
  assert.equal(local.record.generation, 2);
});

Deno.test("local breaker: halfOpenProbes slots, freed by an outcome or after the lease", () => {
  const rules = policy({ halfOpenProbes: 2 });
  const local = createLocalBreaker();
  assert.equal(startLocalProbe(local, rules, T0, 1000), true);
  assert.equal(startLocalProbe(local, rules, T0, 1000), true);
  assert.equal(startLocalProbe(local, rules, T0 + 1, 1000), false);
  finishLocalProbe(local);
  assert.equal(startLocalProbe(local, rules, T0 + 2, 1000), true);
  assert.equal(startLocalProbe(local, rules, T0 + 999, 1000), false);
  assert.equal(startLocalProbe(local, rules, T0 + 1000, 1000), true, "a lost probe expires");
});

Deno.test("fleet counts: the known total is the others' last read plus our exact count", () => {
  const rules = policy({ failureThreshold: 5, windowMs: 10_000 });
  const counts = createFleetCounts(rules);
  addOwnFailure(counts, rules, 0, T0);
  assert.equal(knownTotalReached(counts, rules, "me", 0, T0), false, "nothing read yet");
  const bucket = Math.floor(T0 / counts.bucketWidthMs);
  noteWindowRead(counts, rules, {
    generation: 0,
    atMs: T0,
    counts: [
      { bucket, instanceId: "other", count: 3 },
      // Our own count as KV last saw it: replaced by the exact one in memory, not added.
      { bucket, instanceId: "me", count: 1 },
    ],
    seq: -1,
    writeMs: 0,
  });
  assert.equal(knownTotalReached(counts, rules, "me", 0, T0), false, "3 + 1 < 5");
  addOwnFailure(counts, rules, 0, T0 + 1);
  assert.equal(knownTotalReached(counts, rules, "me", 0, T0 + 1), true, "3 + 2 = 5");
  assert.equal(knownTotalReached(counts, rules, "me", 1, T0 + 1), false, "read in another gen");
  resetFleetCounts(counts, 1);
  assert.equal(counts.own.size, 0);
  assert.equal(fleetFailuresInWindow(counts, rules, 1, T0), null);
});

Deno.test("fleet counts: one report round writes the changed buckets and reads the window", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const rules = policy({ windowMs: 10_000 });
    const store = createKvBreakerStore(kv, { instanceId: "me" });
    const other = createKvBreakerStore(kv, { instanceId: "other" });
    const counts = createFleetCounts(rules);
    const bucket = Math.floor(T0 / counts.bucketWidthMs);
    await other.reportFailures("users", 0, [{ bucket, count: 2 }], 60_000, T0);
    addOwnFailure(counts, rules, 0, T0);
    addOwnFailure(counts, rules, 0, T0 + 1);
    const call = <R>(operation: (s: typeof store) => Promise<R>) => operation(store);
    const read = await reportRound(counts, rules, "users", call, () => T0 + 2);
    assert.equal(counts.dirty.size, 0, "the round took every changed bucket");
    const totals = noteWindowRead(counts, rules, read);
    assert.deepEqual(totals, { failures: 4, reportingInstances: 2 });
    assert.equal(fleetFailuresInWindow(counts, rules, 0, T0 + 2), 4);
  } finally {
    kv.close();
  }
});
