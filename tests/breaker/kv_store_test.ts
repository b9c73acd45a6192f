import assert from "node:assert/strict";
import {
  type BreakerStore,
  createKvBreakerStore,
  failureKey,
  leaseKey,
  recordKey,
} from "../../src/breaker/kv_store.ts";
import { INITIAL_RECORD, transition } from "../../src/breaker/policy.ts";
import { policy, tempKvPath } from "./_helpers.ts";
import { waitFor } from "../_helpers/wait.ts";

const p = policy({ recoveryTimeoutMs: 1000 });
const T0 = 1_700_000_000_000;

const trip = (nowMs: number) => (record: typeof INITIAL_RECORD) =>
  transition(p, record, { type: "trip" }, nowMs, 0);

/** Runs `body` once against `:memory:` and once against a temp file. */
function bothBackends(name: string, body: (kv: Deno.Kv) => Promise<void>): void {
  Deno.test(`kv store (:memory:): ${name}`, async () => {
    const kv = await Deno.openKv(":memory:");
    try {
      await body(kv);
    } finally {
      kv.close();
    }
  });
  Deno.test(`kv store (file): ${name}`, async () => {
    const file = await tempKvPath();
    const kv = await Deno.openKv(file.path);
    try {
      await body(kv);
    } finally {
      kv.close();
      await file.remove();
    }
  });
}

bothBackends("a service with no record reads as closed, generation 0", async (kv) => {
  const store = createKvBreakerStore(kv, { instanceId: "a" });
  const names = Array.from({ length: 23 }, (_, index) => `svc-${index}`);
  const entries = await store.readRecords(names);
  assert.equal(entries.length, 23, "more than getMany's 10 keys are read in chunks");
  for (const entry of entries) {
    assert.deepEqual(entry, { record: INITIAL_RECORD, versionstamp: null, pulse: null });
  }
});

bothBackends("transition commits with CAS and stores who wrote it", async (kv) => {
  const store = createKvBreakerStore(kv, { instanceId: "gw-1" });
  const result = await store.transition("users", trip(T0));
  assert.equal(result.outcome, "committed");
  assert.equal(result.record.state, "open");
  assert.equal(result.record.generation, 1);
  const raw = await kv.get<Record<string, unknown>>(recordKey("users"));
  assert.equal(raw.versionstamp, result.versionstamp);
  assert.equal(raw.value?.updatedBy, "gw-1");
  const [read] = await store.readRecords(["users"]);
  assert.deepEqual(read, { record: result.record, versionstamp: result.versionstamp, pulse: null });
});

bothBackends("transition writes nothing when the update does not apply", async (kv) => {
  const store = createKvBreakerStore(kv, { instanceId: "gw-1" });
  const first = await store.transition("users", trip(T0));
  const again = await store.transition("users", trip(T0 + 1));
  assert.equal(again.outcome, "unchanged", "an open breaker does not trip again");
  assert.equal(again.versionstamp, first.versionstamp);
  const stale = await store.transition("users", trip(T0 + 2), 0);
  assert.equal(stale.outcome, "unchanged", "generation 0 is over");
  assert.equal(stale.record.generation, 1);
});

bothBackends("an unreadable record counts as closed and is overwritten by CAS", async (kv) => {
  await kv.set(recordKey("users"), { state: "sideways" });
  const store = createKvBreakerStore(kv, { instanceId: "gw-1" });
  const [read] = await store.readRecords(["users"]);
  assert.equal(read.record, INITIAL_RECORD);
  assert.notEqual(read.versionstamp, null);
  const result = await store.transition("users", trip(T0));
  assert.equal(result.outcome, "committed");
});

bothBackends("CAS race: of 50 concurrent trips exactly one wins", async (kv) => {
  const store = createKvBreakerStore(kv, { instanceId: "gw-1" });
  const results = await Promise.all(
    Array.from({ length: 50 }, (_, index) => store.transition("users", trip(T0 + index), 0)),
  );
  assert.equal(results.filter((result) => result.outcome === "committed").length, 1);
  assert.equal(results.filter((result) => result.outcome === "unchanged").length, 49);
  const [read] = await store.readRecords(["users"]);
  assert.equal(read.record.generation, 1);
});

bothBackends("CAS: concurrent forces are serialised, none lost", async (kv) => {
  const store = createKvBreakerStore(kv, { instanceId: "gw-1" });
  const results = await Promise.all(
    Array.from({ length: 12 }, () =>
      store.transition(
        "users",
        (record) => transition(p, record, { type: "force", action: "reset" }, T0, 0),
      )),
  );
  assert.ok(results.every((result) => result.outcome === "committed"));
  const [read] = await store.readRecords(["users"]);
  assert.equal(read.record.generation, 12);
});

bothBackends("failure buckets: per instance, summed by the reader, by generation", async (kv) => {
  const a = createKvBreakerStore(kv, { instanceId: "a" });
  const b = createKvBreakerStore(kv, { instanceId: "b" });
  await a.reportFailures("users", 3, [{ bucket: 100, count: 2 }], 60_000, T0);
  await a.reportFailures("users", 3, [{ bucket: 101, count: 1 }], 60_000, T0);
  await a.reportFailures("users", 3, [{ bucket: 101, count: 4 }], 60_000, T0); // a running total: replaces the 1
  await b.reportFailures("users", 3, [{ bucket: 101, count: 5 }], 60_000, T0);
  await b.reportFailures("users", 3, [{ bucket: 111, count: 9 }], 60_000, T0); // outside the range read below
  await b.reportFailures("users", 4, [{ bucket: 101, count: 7 }], 60_000, T0); // another generation
  await b.reportFailures("orders", 3, [{ bucket: 101, count: 8 }], 60_000, T0); // another service
  const counts = await a.readWindow("users", 3, 100, 110);
  assert.deepEqual(
    counts.sort((x, y) => x.bucket - y.bucket || x.instanceId.localeCompare(y.instanceId)),
    [
      { bucket: 100, instanceId: "a", count: 2 },
      { bucket: 101, instanceId: "a", count: 4 },
      { bucket: 101, instanceId: "b", count: 5 },
    ],
  );
  const raw = await kv.get(failureKey("users", 3, 100, "a"));
  assert.equal(raw.value, 2);
});

bothBackends("leases: halfOpenProbes slots, then none; expiry frees them", async (kv) => {
  const a = createKvBreakerStore(kv, { instanceId: "a" });
  const b = createKvBreakerStore(kv, { instanceId: "b" });
  const first = await a.acquireLease("users", 5, 2, T0, 1000);
  const second = await b.acquireLease("users", 5, 2, T0, 1000);
  assert.equal(first?.slot, 0);
  assert.equal(second?.slot, 1);
  assert.equal(await a.acquireLease("users", 5, 2, T0 + 999, 1000), null);
  assert.notEqual(await a.acquireLease("users", 6, 2, T0, 1000), null, "a new round has slots");
  const value = (await kv.get(leaseKey("users", 5, 0))).value;
  assert.deepEqual(value, { instanceId: "a", expiresAtMs: T0 + 1000 });
  // A prober that crashed never releases; at expiresAtMs the slot is free again (KV's own
  // expiry is lazy, so the stored time decides).
  const taken = await b.acquireLease("users", 5, 2, T0 + 1000, 1000);
  assert.equal(taken?.slot, 0);
  assert.deepEqual((await kv.get(leaseKey("users", 5, 0))).value, {
    instanceId: "b",
    expiresAtMs: T0 + 2000,
  });
});

bothBackends("leases: release frees only a slot that is still ours", async (kv) => {
  const a = createKvBreakerStore(kv, { instanceId: "a" });
  const b = createKvBreakerStore(kv, { instanceId: "b" });
  const lease = (await a.acquireLease("users", 1, 1, T0, 1000))!;
  assert.equal(await a.releaseLease("users", lease), true);
  const other = (await b.acquireLease("users", 1, 1, T0, 1000))!;
  assert.equal(other.slot, 0);
  assert.equal(await a.releaseLease("users", lease), false, "b's lease is not a's to free");
  assert.equal(await a.acquireLease("users", 1, 1, T0, 1000), null);
});

bothBackends("leases: 40 concurrent racers for 3 slots, exactly 3 winners", async (kv) => {
  const stores: BreakerStore[] = Array.from(
    { length: 8 },
    (_, index) => createKvBreakerStore(kv, { instanceId: `gw-${index}` }),
  );
  const results = await Promise.all(
    Array.from(
      { length: 40 },
      (_, index) => stores[index % 8].acquireLease("users", 2, 3, T0, 5000),
    ),
  );
  const winners = results.filter((lease) => lease !== null);
  assert.equal(winners.length, 3);
  assert.deepEqual(winners.map((lease) => lease!.slot).sort(), [0, 1, 2]);
});

bothBackends("watch reports record changes and closes cleanly", async (kv) => {
  const store = createKvBreakerStore(kv, { instanceId: "a" });
  const seen: Array<[string, number]> = [];
  const errors: unknown[] = [];
  const names = Array.from({ length: 12 }, (_, index) => `svc-${index}`);
  const watch = store.watchRecords(
    names,
    (service, entry) => seen.push([service, entry.record.generation]),
    (error) => errors.push(error),
  );
  await store.transition("svc-11", trip(T0));
  await waitFor(
    () => seen.some(([service, generation]) => service === "svc-11" && generation === 1),
    { timeoutMs: 2000, what: "the watch to see svc-11's trip" },
  );
  await watch.close();
  await watch.close();
  assert.deepEqual(errors, []);
});

Deno.test("kv store (file, two handles): a trip on one handle is read by the other", async () => {
  const file = await tempKvPath();
  const kvA = await Deno.openKv(file.path);
  const kvB = await Deno.openKv(file.path);
  try {
    const a = createKvBreakerStore(kvA, { instanceId: "a" });
    const b = createKvBreakerStore(kvB, { instanceId: "b" });
    const [won, lost] = await Promise.all([
      a.transition("users", trip(T0), 0),
      b.transition("users", trip(T0), 0),
    ]);
    assert.deepEqual([won.outcome, lost.outcome].sort(), ["committed", "unchanged"]);
    const [read] = await b.readRecords(["users"]);
    assert.equal(read.record.state, "open");
  } finally {
    kvA.close();
    kvB.close();
    await file.remove();
  }
});

Deno.test({
  name: "kv store (file, 4 processes): CAS race across processes has exactly one winner",
  // Separate processes are what makes SQLite answer "database is locked"; the store must
  // retry those and still let exactly one racer win, round after round.
  async fn() {
    const file = await tempKvPath();
    try {
      const rounds = 10;
      // Long enough for four `deno run` start-ups, so the processes really race.
      const startAtMs = Date.now() + 1200;
      const children = Array.from({ length: 4 }, () =>
        new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "--quiet",
            "--unstable-kv",
            "--allow-read",
            "--allow-write",
            new URL("./_race_child.ts", import.meta.url).pathname,
            file.path,
            String(startAtMs),
            String(rounds),
            "10",
          ],
          stdout: "piped",
          stderr: "piped",
        }).output());
      const outputs = await Promise.all(children);
      const perRound: string[][] = Array.from({ length: rounds }, () => []);
      for (const output of outputs) {
        assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
        const rows: string[][] = JSON.parse(new TextDecoder().decode(output.stdout));
        rows.forEach((outcomes, round) => perRound[round].push(...outcomes));
      }
      for (const [round, outcomes] of perRound.entries()) {
        assert.equal(outcomes.length, 40);
        assert.equal(outcomes.filter((outcome) => outcome === "committed").length, 1, `${round}`);
        assert.equal(outcomes.filter((outcome) => outcome === "unchanged").length, 39, `${round}`);
      }
    } finally {
      await file.remove();
    }
  },
});
