/**
 * The fleet-shared breaker across real processes: three gateway instances share one KV file in
 * front of one upstream. Counted on the upstream side.
 */
import assert from "node:assert/strict";
import { type GatewayProcess, startGatewayProcess } from "../_helpers/gateway.ts";
import { startUpstream } from "../_helpers/upstream.ts";
import { bounded, waitFor } from "../_helpers/wait.ts";

const THRESHOLD = 5;
const RECOVERY_MS = 1500;
/** How long the upstream holds the first answer after healing: the probe is in flight. */
const PROBE_HOLD_MS = 300;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function hit(gateway: GatewayProcess): Promise<{ status: number; error: string | null }> {
  const response = await fetch(`${gateway.url}/svc/x`, bounded());
  await response.body?.cancel();
  return { status: response.status, error: response.headers.get("x-breakwater-error") };
}

async function breakerState(gateway: GatewayProcess): Promise<string> {
  const response = await fetch(`${gateway.adminUrl}/admin/breakers`, bounded());
  const body = await response.json();
  return body.services[0].state;
}

/** Waits until every instance's admin API reports `state` (exactly). */
async function allInState(gateways: GatewayProcess[], state: string, timeoutMs: number) {
  await waitFor(
    async () => (await Promise.all(gateways.map(breakerState))).every((s) => s === state),
    { timeoutMs, intervalMs: 25, what: `every instance's breaker ${state}` },
  );
}

async function fleetOf(config: Record<string, unknown>, kvPath: string) {
  const gateways: GatewayProcess[] = [];
  for (let i = 0; i < 3; i++) {
    gateways.push(await startGatewayProcess(config, { sharedKvPath: kvPath }));
  }
  return gateways;
}

Deno.test("three instances on one KV file: one outage costs about threshold failures, one probe", async () => {
  let failing = false;
  let failedCalls = 0;
  let recovering = false;
  let recoveryCalls = 0;
  let callsBeforeFirstAnswer = 0;
  let firstAnswered = false;
  const upstream = startUpstream(async () => {
    if (recovering) {
      recoveryCalls++;
      if (!firstAnswered) {
        // The probe: held for a while so that a second probe, if any instance sent one while
        // the first was in flight, arrives before the first answer and is counted.
        callsBeforeFirstAnswer++;
        await sleep(PROBE_HOLD_MS);
        firstAnswered = true;
      }
    }
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
    // One thread per instance: the bound below counts what each instance lets through, and a
    // worker's trip reaches its sibling by a message (README, "Workers": threshold + 1).
    workers: 1,
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
  let gateways: GatewayProcess[] = [];
  try {
    gateways = await fleetOf(config, kvPath);
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
      await sleep(20); // the trickle's pace
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
    for (const gateway of gateways) assert.equal(await breakerState(gateway), "open");

    // While open, no instance sends anything upstream.
    const failedWhileOpen = failedCalls;
    for (const gateway of gateways) {
      const result = await hit(gateway);
      assert.equal(result.status, 503);
      assert.equal(result.error, "breaker_open");
    }
    assert.equal(failedCalls, failedWhileOpen);

    // Recovery: the upstream heals; once the breakers are half-open all three instances hammer
    // it, each on its own, but exactly one probe reaches it across the fleet, and its success
    // closes every breaker.
    failing = false;
    recovering = true;
    await allInState(gateways, "half_open", RECOVERY_MS + 2000);
    const closedAt = new Map<number, number>();
    const recoveryStart = Date.now();
    await Promise.all(gateways.map(async (gateway, index) => {
      while (!closedAt.has(index) && Date.now() - recoveryStart < 8000) {
        const burst = await Promise.all([hit(gateway), hit(gateway), hit(gateway)]);
        if (
          burst.every((result) => result.status === 200) &&
          (await breakerState(gateway)) === "closed"
        ) {
          closedAt.set(index, Date.now());
        }
        await sleep(10); // the hammering's pace
      }
    }));
    assert.equal(closedAt.size, 3, "every instance closed after the upstream healed");
    console.log(
      `calls while the probe was in flight: ${callsBeforeFirstAnswer}; ` +
        `calls after healing: ${recoveryCalls}`,
    );
    assert.equal(callsBeforeFirstAnswer, 1, "exactly one probe reached the upstream");
  } finally {
    for (const gateway of gateways) await gateway.stop("SIGKILL");
    await upstream.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("after recoveryTimeoutMs exactly halfOpenProbes probes reach a still-failing upstream", async () => {
  let calls = 0;
  const upstream = startUpstream(async () => {
    calls++;
    // Slow failures: a second probe, if any instance sent one, arrives while the first is in
    // flight, before its failure re-opens the breaker.
    await sleep(PROBE_HOLD_MS);
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
  let gateways: GatewayProcess[] = [];
  try {
    gateways = await fleetOf(config, kvPath);
    // Trip it through one instance, then wait for the others to see it.
    let tripped = false;
    for (let i = 0; i < 10 && !tripped; i++) {
      tripped = (await hit(gateways[0])).error === "breaker_open";
    }
    assert.ok(tripped, "instance 0 tripped within 10 failing calls");
    await allInState(gateways, "open", 2000);
    const beforeProbes = calls;
    await allInState(gateways, "half_open", 3000);
    // Every instance hammers it for 1.2 s, each on its own (bursts of 5 at once): one probe
    // reaches the upstream fleet-wide. Its failure re-opens the breaker for at least 1.6 s
    // (2 x 1000 ms, jittered down by at most 20%), so no second round can start within the
    // hammering.
    const results: { status: number; error: string | null }[] = [];
    const hammerUntil = Date.now() + 1200;
    await Promise.all(gateways.map(async (gateway) => {
      while (Date.now() < hammerUntil) {
        results.push(...await Promise.all(Array.from({ length: 5 }, () => hit(gateway))));
        await sleep(20); // the hammering's pace
      }
    }));
    const probes = calls - beforeProbes;
    console.log(`probe calls across 3 instances: ${probes} (of ${results.length} requests)`);
    assert.equal(probes, 1, `upstream saw ${probes} probes`);
    assert.equal(results.filter((result) => result.status === 500).length, probes);
    assert.ok(results.filter((r) => r.error === "breaker_open").length >= results.length - probes);
    // The failed probe re-opened the breaker for everyone (open, not half-open: >= 1.6 s).
    await allInState(gateways, "open", 1000);
  } finally {
    for (const gateway of gateways) await gateway.stop("SIGKILL");
    await upstream.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
