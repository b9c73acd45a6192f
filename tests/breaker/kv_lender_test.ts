/**
 * One KV handle lent to several fleet breakers (a gateway's generations during a reload): a new
 * breaker starting does not close the old one's handle, closing the old one leaves the new one
 * working, and a handle reported dead is replaced once for everybody.
 */
import assert from "node:assert/strict";
import { createFleetBreaker } from "../../src/breaker/fleet.ts";
import { createKvLender } from "../../src/breaker/kv_lender.ts";
import { openGatewayKv } from "../../src/kv.ts";
import { createLogger } from "../../src/telemetry/mod.ts";
import { policy, tempKvPath } from "./_helpers.ts";

function quietGatewayKv(path: string) {
  return openGatewayKv(path, createLogger({ level: "error", write: () => {} }));
}

Deno.test("kv lender: one handle for everybody; a stale one is replaced once", async () => {
  const file = await tempKvPath();
  const gatewayKv = quietGatewayKv(file.path);
  let opens = 0;
  const lend = createKvLender(() => {
    opens++;
    return gatewayKv.open();
  });
  try {
    const [first, second] = await Promise.all([lend(null), lend(null)]);
    assert.equal(first, second, "one open shared by concurrent callers");
    assert.equal(await lend(null), first);
    assert.equal(opens, 1);
    // A breaker saw `first` fail: a fresh handle, and the other breaker reporting the same
    // stale handle later gets that fresh one, not yet another.
    const fresh = await lend(first);
    assert.notEqual(fresh, first);
    assert.equal(await lend(first), fresh);
    assert.equal(opens, 2);
    await fresh.set(["lender"], 1);
    assert.equal((await fresh.get(["lender"])).value, 1);
  } finally {
    gatewayKv.close();
    await file.remove();
  }
});

Deno.test("kv lender: a new breaker starting and the old one closing leave each other's KV alone", async () => {
  const file = await tempKvPath();
  const gatewayKv = quietGatewayKv(file.path);
  const lend = createKvLender(() => gatewayKv.open());
  const degradedLog: string[] = [];
  const breakerOf = (label: string) =>
    createFleetBreaker({
      kv: null,
      reopenKv: lend,
      kvIsLent: true,
      services: { users: policy() },
      instanceId: "gw-1",
      syncIntervalMs: 20,
      onKvStateChange: (degraded) => degradedLog.push(`${label} ${degraded}`),
    });
  const old = breakerOf("old");
  const next = breakerOf("new");
  try {
    await old.start();
    await next.start();
    // The old one keeps working on the shared handle while the new one runs.
    const forced = await old.force("users", "open", { by: "test" });
    assert.equal(forced.state, "forced_open");
    assert.equal(forced.degraded, false);
    await old.close();
    const reset = await next.force("users", "reset", { by: "test" });
    assert.equal(reset.state, "closed");
    assert.equal(reset.degraded, false);
    assert.equal(next.degraded(), false);
    assert.deepEqual(degradedLog, [], "neither breaker lost its KV");
  } finally {
    await old.close();
    await next.close();
    gatewayKv.close();
    await file.remove();
  }
});
