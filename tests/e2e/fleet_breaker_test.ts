/**
 * The fleet-shared breaker across real processes: three gateway instances share one KV file in
 * front of one upstream. Counted on the upstream side.
 */
import assert from "node:assert/strict";
import { type GatewayProcess, startGatewayProcess } from "../_helpers/gateway.ts";
import { startUpstream } from "../_helpers/upstream.ts";

const THRESHOLD = 5;
const RECOVERY_MS = 1500;

async function hit(gateway: GatewayProcess): Promise<{ status: number; error: string | null }> {
  const response = await fetch(`${gateway.url}/svc/x`);
  await response.body?.cancel();
  return { status: response.status, error: response.headers.get("x-breakwater-error") };
}

async function breakerState(gateway: GatewayProcess): Promise<string> {
  const response = await fetch(`${gateway.adminUrl}/admin/breakers`);
  const body = await response.json();
  return body.services[0].state;
}

Deno.test("three instances on one KV file: one outage costs about threshold failures, one probe", async () => {
  let failing = false;
  let failedCalls = 0;
  let probeCalls = 0;
  let recovering = false;
  const upstream = startUpstream(() => {
    if (recovering) probeCalls++;
    if (failing) {
      failedCalls++;
      return new Response("down", { status: 503 });
    }
    return new Response("up");
  });
  const dir = await Deno.makeTempDir({ prefix: "breakwater-fleet-" });
  const kvPath = `${dir}/fleet.kv`;
  const config = {
    kv: { path: kvPath, syncIntervalMs: 100 },
    services: {
      svc: {
        prefix: "/svc",
        upstreams: [upstream.origin],
        timeoutMs: 2000,
        breaker: {
          failureThreshold: THRESHOLD,
          windowMs: 10_000,
          recoveryTimeoutMs: RECOVERY_MS,
          halfOpenProbes: 1,
        },
      },
    },
  };
  const gateways: GatewayProcess[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      gateways.push(await startGatewayProcess(config, { sharedKvPath: kvPath }));
    }
    for (const gateway of gateways) assert.equal((await hit(gateway)).status, 200);

    // The upstream goes dark. Each instance sends a steady trickle, round-robin.
    failing = true;
    const trippedAt = new Map<number, number>();
    const started = Date.now();
    while (trippedAt.size < 3 && Date.now() - started < 10_000) {
      await Promise.all(gateways.map(async (gateway, index) => {
        if (trippedAt.has(index)) return;
        const result = await hit(gateway);
        if (result.error === "breaker_open") trippedAt.set(index, Date.now());
      }));
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.equal(trippedAt.size, 3, "every instance rejects with breaker_open");
    const firstTrip = Math.min(...trippedAt.values());
    const lastTrip = Math.max(...trippedAt.values());
    console.log(
      `failed calls upstream before all 3 rejected: ${failedCalls} (threshold ${THRESHOLD}); ` +
        `spread of trips across instances: ${lastTrip - firstTrip} ms`,
    );
    // Independent breakers would let 3 x 5 = 15 through. The shared one allows the threshold
    // plus what is in flight while the trip propagates (one request per instance here).
    assert.ok(failedCalls <= THRESHOLD + 3, `upstream saw ${failedCalls} failed calls`);
    assert.ok(lastTrip - firstTrip < 1000, "every instance learned of the trip within 1 s");
    for (const gateway of gateways) assert.match(await breakerState(gateway), /open/);

    // While open, no instance sends anything upstream.
    const failedWhileOpen = failedCalls;
    for (const gateway of gateways) {
      const result = await hit(gateway);
      assert.equal(result.status, 503);
      assert.equal(result.error, "breaker_open");
    }
    assert.equal(failedCalls, failedWhileOpen);

    // Recovery: the upstream heals; after recoveryTimeoutMs all three instances hammer it, but
    // exactly one probe reaches it across the fleet, and its success closes every breaker.
    failing = false;
    recovering = true;
    await new Promise((resolve) => setTimeout(resolve, RECOVERY_MS + 100));
    const closedAt = new Map<number, number>();
    const recoveryStart = Date.now();
    while (closedAt.size < 3 && Date.now() - recoveryStart < 8000) {
      await Promise.all(gateways.map(async (gateway, index) => {
        if (closedAt.has(index)) return;
        const burst = await Promise.all([hit(gateway), hit(gateway), hit(gateway)]);
        if (
          burst.every((result) => result.status === 200) &&
          (await breakerState(gateway)) === "closed"
        ) {
          closedAt.set(index, Date.now());
        }
      }));
      if (probeCalls === 0) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.equal(closedAt.size, 3, "every instance closed after the upstream healed");
  } finally {
    for (const gateway of gateways) await gateway.stop();
    await upstream.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("after recoveryTimeoutMs exactly halfOpenProbes probes reach a still-failing upstream", async () => {
  let calls = 0;
  const upstream = startUpstream(() => {
    calls++;
    return new Response("down", { status: 500 });
  });
  const dir = await Deno.makeTempDir({ prefix: "breakwater-fleet-" });
  const kvPath = `${dir}/fleet.kv`;
  const config = {
    kv: { path: kvPath, syncIntervalMs: 100 },
    services: {
      svc: {
        prefix: "/svc",
        upstreams: [upstream.origin],
        timeoutMs: 2000,
        breaker: { failureThreshold: 3, recoveryTimeoutMs: 1000, halfOpenProbes: 1 },
      },
    },
  };
  const gateways: GatewayProcess[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      gateways.push(await startGatewayProcess(config, { sharedKvPath: kvPath }));
    }
    // Trip it through one instance, then wait for the others to see it.
    for (let i = 0; i < 10; i++) {
      if ((await hit(gateways[0])).error === "breaker_open") break;
    }
    for (const gateway of gateways) {
      const deadline = Date.now() + 2000;
      while (!(await breakerState(gateway)).includes("open") && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    }
    const beforeProbes = calls;
    await new Promise((resolve) => setTimeout(resolve, 1100));
    // Every instance hammers it for 1.2 s (bursts of 5 at once): one probe reaches the
    // upstream fleet-wide. Its failure re-opens the breaker for at least 1.6 s (2 x 1000 ms,
    // jittered down by at most 20%), so no second round can start within the hammering.
    const results: { status: number; error: string | null }[] = [];
    const hammerUntil = Date.now() + 1200;
    while (Date.now() < hammerUntil) {
      const burst = await Promise.all(
        gateways.map((gateway) => Promise.all(Array.from({ length: 5 }, () => hit(gateway)))),
      );
      results.push(...burst.flat());
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const probes = calls - beforeProbes;
    console.log(`probe calls across 3 instances: ${probes} (of ${results.length} requests)`);
    assert.equal(probes, 1, `upstream saw ${probes} probes`);
    assert.equal(results.filter((result) => result.status === 500).length, probes);
    assert.ok(results.filter((r) => r.error === "breaker_open").length >= results.length - probes);
    // The failed probe re-opened the breaker for everyone.
    await new Promise((resolve) => setTimeout(resolve, 300));
    for (const gateway of gateways) assert.match(await breakerState(gateway), /open/);
  } finally {
    for (const gateway of gateways) await gateway.stop();
    await upstream.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
