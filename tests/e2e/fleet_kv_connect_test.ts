/**
 * The fleet breaker across "hosts": three gateway processes open one KV Connect server
 * (`kv.path: "http://127.0.0.1:PORT"`, token in `DENO_KV_ACCESS_TOKEN`) exactly as they would
 * open `denokv` or Deno Deploy's KV on another machine. The server is the test one
 * (tests/_helpers/kv_connect), a child process over a real Deno KV file, so it can be killed
 * and restarted. Counted on the upstream side; every wait is bounded.
 */
import assert from "node:assert/strict";
import { type GatewayProcess, startGatewayProcess } from "../_helpers/gateway.ts";
import { recordKey } from "../../src/breaker/kv_store.ts";
import {
  type KvConnectProcess,
  openKvConnect,
  spawnKvConnectServer,
} from "../_helpers/kv_connect/mod.ts";
import { startUpstream } from "../_helpers/upstream.ts";
import { waitFor } from "../_helpers/wait.ts";

const TOKEN = "fleet-kv-connect-token-0123";
const ADMIN_TOKEN = "fleet-admin-token";
const REQUEST_TIMEOUT_MS = 5000;

interface Hit {
  status: number;
  error: string | null;
}

async function hit(gateway: GatewayProcess): Promise<Hit> {
  const response = await fetch(`${gateway.url}/svc/x`, {
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  await response.body?.cancel();
  return { status: response.status, error: response.headers.get("x-breakwater-error") };
}

interface BreakerInfo {
  state: string;
  nextProbeAt: number | null;
}

async function breaker(gateway: GatewayProcess): Promise<BreakerInfo> {
  const response = await fetch(`${gateway.adminUrl}/admin/breakers`, {
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const body = await response.json();
  return body.services[0];
}

async function readiness(gateway: GatewayProcess): Promise<{ code: number; status: string }> {
  const response = await fetch(`${gateway.url}/readyz`, {
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const body = await response.json();
  return { code: response.status, status: body.status };
}

async function force(gateway: GatewayProcess, action: "open" | "close" | "reset"): Promise<void> {
  const response = await fetch(`${gateway.adminUrl}/admin/breakers/svc`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ action }),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  assert.equal(response.status, 200, await response.text());
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits (bounded) for `condition`; returns how long it took. */
async function timedWait(
  what: string,
  condition: () => Promise<boolean>,
  timeoutMs: number,
  intervalMs = 10,
): Promise<number> {
  const started = Date.now();
  await waitFor(condition, { what, timeoutMs, intervalMs });
  return Date.now() - started;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** A KV Connect server on a fresh file, plus what is needed to restart it on the same port. */
async function startKvHost(): Promise<{
  server: () => KvConnectProcess;
  restart: () => Promise<void>;
  stats: () => Promise<Record<string, number>>;
  close: () => Promise<void>;
}> {
  const dir = await Deno.makeTempDir({ prefix: "breakwater-kv-host-" });
  const path = `${dir}/fleet.kv`;
  let current = await spawnKvConnectServer({ path, accessToken: TOKEN });
  return {
    server: () => current,
    async restart() {
      current = await spawnKvConnectServer({ path, accessToken: TOKEN, port: current.port });
    },
    async stats() {
      const response = await fetch(`${current.url}/_stats`, {
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
      return await response.json();
    },
    async close() {
      await current.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

function fleetConfig(kvUrl: string, breakerConfig: Record<string, unknown>, extra = {}) {
  return (upstream: string) => ({
    kv: { path: kvUrl, ...extra },
    services: {
      svc: {
        prefix: "/svc",
        upstreams: [upstream],
        timeoutMs: 2000,
        breaker: { failureThreshold: 5, windowMs: 10_000, halfOpenProbes: 1, ...breakerConfig },
      },
    },
  });
}

/** Starts `count` gateways at once on one config. */
async function startFleet(
  count: number,
  config: Record<string, unknown>,
  env: Record<string, string> = {},
): Promise<GatewayProcess[]> {
  const started = await Promise.allSettled(
    Array.from({ length: count }, () =>
      startGatewayProcess(config, {
        env: { DENO_KV_ACCESS_TOKEN: TOKEN, BREAKWATER_ADMIN_TOKEN: ADMIN_TOKEN, ...env },
      })),
  );
  const gateways = started.flatMap((result) => result.status === "fulfilled" ? [result.value] : []);
  const failed = started.find((result) => result.status === "rejected");
  if (failed !== undefined) {
    await Promise.all(gateways.map((gateway) => gateway.stop("SIGKILL")));
    throw (failed as PromiseRejectedResult).reason;
  }
  return gateways;
}

Deno.test("three gateways on one KV Connect server: one shared trip, one probe per round, all close on healing", async () => {
  const RECOVERY_MS = 1500;
  let mode: "up" | "down" | "slow-up" = "up";
  const arrivals: { atMs: number; mode: string }[] = [];
  let firstHealedAnswerAtMs = Infinity;
  const upstream = startUpstream(async () => {
    arrivals.push({ atMs: Date.now(), mode });
    if (mode === "down") return new Response("down", { status: 503 });
    if (mode === "slow-up") {
      // The healing probe takes a while, so the rest of the fleet's traffic arrives while it
      // is in flight: any second probe would show up here.
      await pause(300);
      firstHealedAnswerAtMs = Math.min(firstHealedAnswerAtMs, Date.now());
    }
    return new Response("up");
  });
  const host = await startKvHost();
  const gateways: GatewayProcess[] = [];
  try {
    gateways.push(
      ...await startFleet(
        3,
        fleetConfig(host.server().url, { recoveryTimeoutMs: RECOVERY_MS })(upstream.origin),
      ),
    );
    for (const gateway of gateways) {
      assert.equal((await readiness(gateway)).status, "ready", "joined the fleet through KV");
      assert.equal((await hit(gateway)).status, 200);
    }

    // The upstream goes dark; each instance sends a steady trickle.
    mode = "down";
    const failingFrom = arrivals.length;
    const trippedAtMs = new Map<number, number>();
    const outageStart = Date.now();
    while (trippedAtMs.size < 3 && Date.now() - outageStart < 10_000) {
      await Promise.all(gateways.map(async (gateway, index) => {
        if (trippedAtMs.has(index)) return;
        if ((await hit(gateway)).error === "breaker_open") trippedAtMs.set(index, Date.now());
      }));
      await pause(20);
    }
    assert.equal(trippedAtMs.size, 3, "every instance rejects with breaker_open");
    const failedCalls = arrivals.length - failingFrom;
    const spreadMs = Math.max(...trippedAtMs.values()) - Math.min(...trippedAtMs.values());
    console.log(
      `KV Connect fleet: failed calls upstream before all 3 rejected: ${failedCalls} ` +
        `(threshold 5, 3 independent breakers: 15); spread of trips: ${spreadMs} ms`,
    );
    // The bound of src/breaker/fleet_counts.ts, T + sum of min(T, C_i + ceil(r_i * 2R)): one
    // call in flight per instance (C_i = 1) and one more sent while ~2 KV round trips pass
    // (r_i * 2R <= 1 while a round trip stays under half the ~25 ms pace): 5 + 3 x 2.
    // Independent breakers would allow 15.
    assert.ok(failedCalls <= 5 + 3 * 2, `upstream saw ${failedCalls} failed calls`);
    for (const gateway of gateways) assert.match((await breaker(gateway)).state, /open/);

    // Round 1, still failing: after recoveryTimeoutMs all three hammer it; one probe gets
    // through fleet-wide, fails, and re-opens the breaker for >= 2 x 1500 x 0.8 ms.
    await pause(RECOVERY_MS + 100);
    const round1From = arrivals.length;
    const round1: Hit[] = [];
    const hammerUntil = Date.now() + 1200;
    while (Date.now() < hammerUntil) {
      const burst = await Promise.all(
        gateways.map((gateway) => Promise.all(Array.from({ length: 5 }, () => hit(gateway)))),
      );
      round1.push(...burst.flat());
      await pause(20);
    }
    const probes1 = arrivals.length - round1From;
    assert.equal(probes1, 1, `round 1: ${probes1} probes reached the upstream`);
    assert.equal(round1.filter((result) => result.status === 503 && !result.error).length, 1);

    // Round 2, healed: wait for the probe time the fleet agreed on, then hammer again. Exactly
    // one probe may reach the upstream before its (slow) success closes the breaker.
    mode = "slow-up";
    await timedWait("the failed probe re-opened the breaker everywhere", async () => {
      const views = await Promise.all(gateways.map(breaker));
      return views.every((view) => view.state === "open" && view.nextProbeAt !== null);
    }, 3000);
    const { nextProbeAt } = await breaker(gateways[0]);
    await pause(Math.max(0, nextProbeAt! - Date.now()) + 50);
    const round2From = arrivals.length;
    const round2: Hit[] = [];
    const closedAtMs = new Map<number, number>();
    const round2Start = Date.now();
    while (closedAtMs.size < 3 && Date.now() - round2Start < 8000) {
      const burst = await Promise.all(
        gateways.map((gateway) => Promise.all(Array.from({ length: 3 }, () => hit(gateway)))),
      );
      round2.push(...burst.flat());
      for (const [index, gateway] of gateways.entries()) {
        if (!closedAtMs.has(index) && (await breaker(gateway)).state === "closed") {
          closedAtMs.set(index, Date.now());
        }
      }
      await pause(10);
    }
    assert.equal(closedAtMs.size, 3, "every instance closed after the upstream healed");
    const probes2 = arrivals.slice(round2From).filter((call) => call.atMs < firstHealedAnswerAtMs)
      .length;
    const rejectedWhileProbing = round2.filter((result) => result.error === "breaker_open").length;
    console.log(
      `KV Connect fleet: probes per half-open round: ${probes1} (failing), ${probes2} (healing, ` +
        `${rejectedWhileProbing} requests rejected meanwhile)`,
    );
    assert.equal(
      probes2,
      1,
      `round 2: ${probes2} calls reached the upstream before the probe ended`,
    );
    assert.ok(rejectedWhileProbing >= 3, "the rest of the fleet was hammering meanwhile");
    for (const gateway of gateways) assert.equal((await hit(gateway)).status, 200);
  } finally {
    await Promise.all(gateways.map((gateway) => gateway.stop()));
    await host.close();
    await upstream.close();
  }
});

Deno.test("propagation through watch: the others reject within milliseconds of one trip", async () => {
  const upstream = startUpstream(() => new Response("down", { status: 503 }));
  const host = await startKvHost();
  const gateways: GatewayProcess[] = [];
  const TRIPS = 5;
  let observer: Deno.Kv | null = null;
  let observerReader: ReadableStreamDefaultReader<Deno.KvEntryMaybe<unknown>[]> | null = null;
  let observing: Promise<void> = Promise.resolve();
  try {
    // Re-sync once a minute: within this test only kv.watch can carry a trip to the others
    // (and they send nothing, so they never enter alert mode).
    const config = fleetConfig(
      host.server().url,
      { failureThreshold: 3, recoveryTimeoutMs: 60_000 },
      { syncIntervalMs: 60_000 },
    )(upstream.origin);
    gateways.push(...await startFleet(3, config));
    const [tripper, ...others] = gateways;
    const stats = await host.stats();
    assert.ok(stats.openWatches >= 3, `every instance watches: ${JSON.stringify(stats)}`);
    // A watcher of our own on the record tells when the trip reached KV, to split the latency
    // into "the tripping instance's reports and CAS" and "KV -> the other instances".
    observer = await openKvConnect(host.server().url, TOKEN);
    const recordOpenedAtMs: number[] = [];
    observerReader = observer.watch([recordKey("svc")]).getReader();
    const reader = observerReader;
    observing = (async () => {
      while (true) {
        const { value, done } = await reader.read();
        if (done) return;
        if ((value[0].value as { state?: string } | null)?.state === "open") {
          recordOpenedAtMs.push(Date.now());
        }
      }
    })().catch(() => {});

    const latenciesMs: number[] = [];
    const fromKvMs: number[] = [];
    const toKvMs: number[] = [];
    for (let trip = 0; trip < TRIPS; trip++) {
      await timedWait("every instance closed", async () => {
        const views = await Promise.all(gateways.map(breaker));
        return views.every((view) => view.state === "closed");
      }, 3000);
      const tripStartMs = Date.now();
      let trippedAtMs = 0;
      // With workers (the default) a failure reaches the instance's breaker by a message to its
      // main thread; on a saturated machine a few more calls can pass before the trip is back.
      for (let attempt = 0; attempt < 100 && trippedAtMs === 0; attempt++) {
        if ((await hit(tripper)).error === "breaker_open") trippedAtMs = Date.now();
      }
      assert.ok(trippedAtMs > 0, "the tripping instance opened");
      await Promise.all(others.map(async (gateway) => {
        await timedWait(
          "the trip reached another instance",
          async () => {
            return (await breaker(gateway)).state === "open";
          },
          3000,
          2,
        );
        latenciesMs.push(Date.now() - trippedAtMs);
        const inKvAtMs = recordOpenedAtMs.find((atMs) => atMs >= tripStartMs);
        if (inKvAtMs !== undefined) fromKvMs.push(Date.now() - inKvAtMs);
      }));
      const inKvAtMs = recordOpenedAtMs.find((atMs) => atMs >= tripStartMs);
      if (inKvAtMs !== undefined) toKvMs.push(inKvAtMs - trippedAtMs);
      await force(tripper, "reset");
    }
    console.log(
      `KV Connect fleet: trip -> other instances reject via watch, ${latenciesMs.length} samples: ` +
        `median ${median(latenciesMs)} ms, max ${Math.max(...latenciesMs)} ms ` +
        `(re-sync every 60 s); of which the tripper's report + CAS until the record is open in ` +
        `KV: median ${median(toKvMs)} ms, max ${Math.max(...toKvMs)} ms; record open in KV -> ` +
        `instance rejects: median ${median(fromKvMs)} ms, max ${Math.max(...fromKvMs)} ms`,
    );
    assert.ok(Math.max(...latenciesMs) < 1000, `latencies ${latenciesMs.join(", ")} ms`);
  } finally {
    await observerReader?.cancel().catch(() => {});
    await observing;
    observer?.close();
    await Promise.all(gateways.map((gateway) => gateway.stop()));
    await host.close();
    await upstream.close();
  }
});

Deno.test("KV Connect server killed and restarted mid-traffic: no request fails, degraded, then rejoined", async () => {
  const upstream = startUpstream(() => new Response("up"));
  const host = await startKvHost();
  const gateways: GatewayProcess[] = [];
  const results: { status: number; phase: string }[] = [];
  let phase = "before";
  let running = true;
  let loops: Promise<void>[] = [];
  try {
    gateways.push(...await startFleet(3, fleetConfig(host.server().url, {})(upstream.origin)));
    loops = gateways.map(async (gateway) => {
      while (running) {
        let status = 0;
        try {
          status = (await hit(gateway)).status;
        } catch {
          // a refused or timed-out request counts as a failure below
        }
        results.push({ status, phase });
        await pause(10);
      }
    });
    await pause(300);

    phase = "outage";
    await host.server().stop("SIGKILL");
    const degradedAfterMs = await Promise.all(
      gateways.map((gateway) =>
        timedWait(
          "/readyz says degraded",
          async () => {
            const ready = await readiness(gateway);
            assert.equal(ready.code, 200, "a degraded instance still takes traffic");
            return ready.status === "degraded";
          },
          5000,
          20,
        )
      ),
    );
    await pause(500);

    phase = "restarted";
    const restartAtMs = Date.now();
    await host.restart();
    const restartTookMs = Date.now() - restartAtMs;
    const rejoinedAfterMs = await Promise.all(
      gateways.map((gateway) =>
        timedWait(
          "/readyz says ready again",
          async () => {
            return (await readiness(gateway)).status === "ready";
          },
          15_000,
          20,
        )
      ),
    );
    await pause(200);
    running = false;
    await Promise.all(loops);

    const failed = results.filter((result) => result.status !== 200);
    const during = results.filter((result) => result.phase === "outage").length;
    console.log(
      `KV Connect outage: ${results.length} requests, ${during} during the outage, ` +
        `${failed.length} failed; degraded after ${degradedAfterMs.join("/")} ms; server back ` +
        `in ${restartTookMs} ms; rejoined ${rejoinedAfterMs.join("/")} ms after it listened`,
    );
    assert.deepEqual(failed, []);
    assert.ok(during >= 30, `only ${during} requests during the outage`);

    // Back in the fleet: an operator's force on one instance reaches the others again.
    await force(gateways[0], "open");
    for (const gateway of gateways.slice(1)) {
      await timedWait("a forced open reaches the others", async () => {
        return (await breaker(gateway)).state === "forced_open";
      }, 3000);
    }
    await force(gateways[0], "reset");

    // SIGTERM while the KV server is down again: every instance still drains and exits 0
    // (Deno's KV Connect client would retry its pending calls forever; the gateway must not
    // wait for them).
    await host.server().stop("SIGKILL");
    const exits = await Promise.all(gateways.map(async (gateway) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const status = await Promise.race([
        gateway.stop(),
        new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), 10_000)),
      ]);
      clearTimeout(timer);
      return status?.code ?? "no exit within 10 s";
    }));
    assert.deepEqual(exits, [0, 0, 0]);
  } finally {
    running = false;
    await Promise.all(loops);
    await Promise.all(gateways.map((gateway) => gateway.stop()));
    await host.close();
    await upstream.close();
  }
});

Deno.test("a wrong KV Connect token: the gateway starts degraded, serves, and says why", async () => {
  const upstream = startUpstream(() => new Response("up"));
  const host = await startKvHost();
  let gateway: GatewayProcess | null = null;
  try {
    [gateway] = await startFleet(1, fleetConfig(host.server().url, {})(upstream.origin), {
      DENO_KV_ACCESS_TOKEN: "not-the-token",
    });
    const listening = gateway.lines.find((line) => line.msg === "listening");
    assert.equal(listening?.degraded, true);
    assert.equal((await hit(gateway)).status, 200);
    assert.deepEqual(await readiness(gateway), { code: 200, status: "degraded" });
    // It keeps trying in the background (once a second), without a log line per try.
    await pause(2500);
    assert.deepEqual(await readiness(gateway), { code: 200, status: "degraded" });
    const why = gateway.lines.filter((line) =>
      line.msg === "kv open failed" && /401.*Invalid access token/.test(String(line.error))
    );
    assert.ok(why.length >= 1, `no log line says why: ${JSON.stringify(gateway.lines)}`);
    assert.ok(why.length <= 2, `${why.length} log lines for one reason`);
    assert.ok((await host.stats()).unauthorized >= 2, "it retried the exchange");
  } finally {
    await gateway?.stop();
    await host.close();
    await upstream.close();
  }
});
