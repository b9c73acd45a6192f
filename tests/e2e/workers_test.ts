/**
 * A gateway process with `"workers": 2`: both workers serve the one public port, the breaker
 * is one for the instance (a trip reaches both workers at once, one probe per half-open round),
 * `/metrics` sums the workers, a crashed worker is restarted while the other serves, and
 * SIGTERM drains both.
 */
import assert from "node:assert/strict";
import {
  type GatewayProcess,
  runGatewayExpectingExit,
  startGatewayProcess,
} from "../_helpers/gateway.ts";
import { startUpstream, type TestUpstream } from "../_helpers/upstream.ts";
import { readCgroupLimits } from "../../src/config/cgroup.ts";
import { resolveWorkerCount } from "../../src/workers/count.ts";
import { bounded, closeAll, waitFor, within } from "../_helpers/wait.ts";

/** A fresh connection per request, so the kernel's `SO_REUSEPORT` choice varies. */
async function getFresh(url: string): Promise<Response> {
  return await fetch(url, bounded({ headers: { connection: "close" } }));
}

interface WorkersView {
  workers: { index: number; listening: boolean; requests: number; restarts: number }[];
}

async function workersOf(gateway: GatewayProcess): Promise<WorkersView["workers"]> {
  const response = await fetch(`${gateway.adminUrl}/admin/workers`, bounded());
  assert.equal(response.status, 200);
  return ((await response.json()) as WorkersView).workers;
}

async function breakerOf(gateway: GatewayProcess, service: string) {
  const response = await fetch(`${gateway.adminUrl}/admin/breakers`, bounded());
  const body = await response.json() as {
    services: { service: string; state: string; pool: { max: number } }[];
  };
  return body.services.find((each) => each.service === service)!;
}

function config(
  upstream: TestUpstream,
  extra: Record<string, unknown> = {},
  recoveryTimeoutMs = 1000,
) {
  return {
    workers: 2,
    services: {
      api: {
        prefix: "/api",
        upstreams: [upstream.origin],
        breaker: {
          failureThreshold: 4,
          recoveryTimeoutMs,
          maxRecoveryTimeoutMs: recoveryTimeoutMs,
        },
      },
    },
    ...extra,
  };
}

Deno.test("workers 2: both serve the port, one pool split, /metrics sums both, SIGTERM drains", async () => {
  const upstream = startUpstream(() => new Response("ok"));
  let gateway: GatewayProcess | null = null;
  try {
    gateway = await startGatewayProcess(config(upstream));
    const listening = gateway.lines.find((line) => line.msg === "listening")!;
    assert.equal(listening.workers, 2);
    // Fresh connections until each worker answered some (the kernel hashes each connection).
    await waitFor(async () => {
      const response = await getFresh(`${gateway!.url}/api/x`);
      assert.equal(await response.text(), "ok");
      const workers = await workersOf(gateway!);
      return workers.every((worker) => worker.requests > 0);
    }, { timeoutMs: 10_000, what: "both workers answered requests" });
    // The instance's readiness on the admin port: ready, both workers listening.
    const ready = await fetch(`${gateway.adminUrl}/readyz`, bounded());
    const readiness = await ready.json();
    assert.equal(ready.status, 200);
    assert.equal(readiness.status, "ready");
    assert.deepEqual(readiness.workers, { listening: 2, total: 2 });
    assert.equal(readiness.services.api.pool.max, 20);

    // The pool's 20 slots are split 10 + 10; the admin view sums them.
    assert.equal((await breakerOf(gateway, "api")).pool.max, 20);

    // Scrapes are live, the per-worker counts come with each worker's stats once a second.
    let metrics = "";
    await waitFor(async () => {
      const workers = await workersOf(gateway!);
      const total = workers.reduce((sum, worker) => sum + worker.requests, 0);
      metrics = await (await fetch(`${gateway!.adminUrl}/metrics`, bounded())).text();
      const served = [...metrics.matchAll(
        /^http_server_request_duration_seconds_count\{[^}]*service="api"[^}]*\} (\d+)/gm,
      )].reduce((sum, match) => sum + Number(match[1]), 0);
      return served === total && total >= 2;
    }, { timeoutMs: 5000, what: "/metrics counts every worker's requests" });
    assert.equal(
      metrics.match(/^# TYPE http_server_request_duration_seconds /gm)?.length,
      1,
      "one family, not one per worker",
    );

    // The dashboard: every worker's traffic (sent once a second), the pools summed.
    await waitFor(async () => {
      const response = await fetch(`${gateway!.adminUrl}/admin/dashboard.json`, bounded());
      const body = await response.json() as {
        services: { service: string; pool: { max: number }; traffic: { requests: number[] } }[];
      };
      const api = body.services.find((service) => service.service === "api")!;
      assert.equal(api.pool.max, 20);
      const shown = api.traffic.requests.reduce((sum, count) => sum + count, 0);
      const total = (await workersOf(gateway!)).reduce((sum, worker) => sum + worker.requests, 0);
      return shown === total;
    }, { timeoutMs: 5000, what: "the dashboard shows both workers' requests" });

    const status = await within(gateway.stop("SIGTERM"), 15_000, "SIGTERM drains and exits");
    assert.equal(status.code, 0, gateway.stderr());
    assert.ok(gateway.lines.some((line) => line.msg === "shutdown complete" && line.clean));
    gateway = null;
  } finally {
    await gateway?.stop("SIGKILL");
    await closeAll({ upstream });
  }
});

/** An upstream that fails (503 after `delayMs`) while `failing`, and tracks overlap. */
function switchableUpstream(delayMs: number) {
  const state = { failing: true, calls: 0, inFlight: 0, maxInFlight: 0 };
  const upstream = startUpstream(async () => {
    state.calls++;
    state.inFlight++;
    state.maxInFlight = Math.max(state.maxInFlight, state.inFlight);
    try {
      if (!state.failing) return new Response("ok");
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      return new Response("down", { status: 503 });
    } finally {
      state.inFlight--;
    }
  });
  return { upstream, state };
}

Deno.test("workers 2: one breaker for the instance (trip reaches both, one probe per round)", async () => {
  const { upstream, state } = switchableUpstream(50);
  const kvDir = await Deno.makeTempDir({ prefix: "breakwater-workers-kv-" });
  let gateway: GatewayProcess | null = null;
  try {
    gateway = await startGatewayProcess(config(upstream, {}, 2000), {
      sharedKvPath: `${kvDir}/fleet.kv`,
    });
    // Sequential failures on fresh connections, spread over both workers by the kernel.
    let first503 = -1;
    let trippedAt = 0;
    for (let i = 0; i < 20; i++) {
      const response = await getFresh(`${gateway.url}/api/x`);
      await response.body?.cancel();
      if (response.headers.get("x-breakwater-error") === "breaker_open") {
        first503 = i;
        trippedAt = Date.now();
        break;
      }
    }
    assert.ok(first503 >= 0, "the breaker opened");
    // Two breakers (one per worker) would let 2 x 4 failures through; one lets 4 (a fifth
    // can only be a request admitted while the trip was being published).
    assert.ok(state.calls <= 5, `failed calls on the upstream: ${state.calls}`);
    const callsAtTrip = state.calls;

    // One member of the fleet: every failure counted in KV is under one instance id.
    const kv = await Deno.openKv(`${kvDir}/fleet.kv`);
    try {
      const reporters = new Set<unknown>();
      for await (const entry of kv.list({ prefix: ["breakwater", "failures", "api"] })) {
        reporters.add(entry.key.at(-1));
      }
      assert.equal(reporters.size, 1, `failure reporters: ${[...reporters].join(", ")}`);
    } finally {
      kv.close();
    }

    // Both workers refuse at once: fresh connections (the kernel hashes each to one of the two
    // listeners: 12 all on one worker has odds of 2^-11) well before the 1.6-2 s probe time.
    const refusingUntil = trippedAt + 1200;
    let refused = 0;
    while (Date.now() < refusingUntil && refused < 30) {
      const response = await getFresh(`${gateway.url}/api/x`);
      await response.body?.cancel();
      assert.equal(
        response.headers.get("x-breakwater-error"),
        "breaker_open",
        `request ${refused}`,
      );
      refused++;
    }
    assert.ok(refused >= 12, `only ${refused} requests in 1.2 s`);
    assert.equal(state.calls, callsAtTrip, "no worker sent another call");

    // Half-open rounds every 1.6-2 s with the upstream still failing: 8 concurrent clients
    // for 4.5 s get one probe per round, never two at once.
    const hammerUntil = Date.now() + 4500;
    const callsBefore = state.calls;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (Date.now() < hammerUntil) {
        const response = await getFresh(`${gateway!.url}/api/x`);
        await response.body?.cancel();
      }
    }));
    const probes = state.calls - callsBefore;
    assert.equal(state.maxInFlight, 1, "never two probes at once");
    assert.ok(probes >= 1 && probes <= 4, `probes in 4.5 s of 1.6-2 s rounds: ${probes}`);

    // Healed: the next probe closes the breaker for both workers.
    state.failing = false;
    await waitFor(async () => {
      const response = await getFresh(`${gateway!.url}/api/x`);
      await response.body?.cancel();
      return response.status === 200;
    }, { timeoutMs: 5000, what: "a probe closed the breaker" });
    await waitFor(async () => (await breakerOf(gateway!, "api")).state === "closed");
    // The close reaches the worker that did not probe by one message between threads: on a
    // loaded machine it can land a few ms after the admin view reads closed. Within a bound,
    // ten fresh connections in a row (both workers, odds 2^-9 otherwise) all succeed.
    await waitFor(async () => {
      for (let i = 0; i < 10; i++) {
        const response = await getFresh(`${gateway!.url}/api/x`);
        await response.body?.cancel();
        if (response.status !== 200) return false;
      }
      return true;
    }, { timeoutMs: 2000, what: "both workers admit after the close" });
    assert.equal((await gateway.stop("SIGTERM")).code, 0, gateway.stderr());
    gateway = null;
  } finally {
    await gateway?.stop("SIGKILL");
    await closeAll({ upstream });
    await Deno.remove(kvDir, { recursive: true });
  }
});

Deno.test("workers 2: a crashed worker is restarted while the other serves", async () => {
  const upstream = startUpstream(() => new Response("ok"));
  let gateway: GatewayProcess | null = null;
  try {
    gateway = await startGatewayProcess(config(upstream), {
      env: { BREAKWATER_TEST_HOOKS: "1" },
    });
    const crash = await fetch(`${gateway.adminUrl}/admin/test/crash-worker/0`, {
      ...bounded(),
      method: "POST",
    });
    assert.equal(crash.status, 200);
    let served = 0;
    let failed = 0;
    await waitFor(async () => {
      try {
        const response = await getFresh(`${gateway!.url}/api/x`);
        if ((await response.text()) === "ok") served++;
        else failed++;
      } catch {
        failed++; // a connection queued on the crashing worker's listener is reset
      }
      const workers = await workersOf(gateway!);
      return workers[0].restarts === 1 && workers.every((worker) => worker.listening);
    }, { timeoutMs: 10_000, intervalMs: 0, what: "worker 0 restarted" });
    const crashed = gateway.lines.find((line) => line.msg === "worker crashed");
    assert.equal(crashed?.worker, 0);
    assert.match(String(crashed?.error), /crash requested by a test hook/);
    assert.ok(served > failed, `served ${served}, failed ${failed} while a worker restarted`);
    // Both serve again.
    const before = (await workersOf(gateway)).map((worker) => worker.requests);
    await waitFor(async () => {
      const response = await getFresh(`${gateway!.url}/api/x`);
      assert.equal(await response.text(), "ok");
      const after = (await workersOf(gateway!)).map((worker) => worker.requests);
      return after.every((count, index) => count > before[index]);
    }, { timeoutMs: 10_000, what: "both workers served after the restart" });
    assert.equal((await gateway.stop("SIGTERM")).code, 0, gateway.stderr());
    gateway = null;
  } finally {
    await gateway?.stop("SIGKILL");
    await closeAll({ upstream });
  }
});

Deno.test("workers 2: SIGHUP reaches every worker; SIGTERM lets both finish their requests", async () => {
  const fast = startUpstream(() => new Response("fast"));
  const slow = startUpstream(async () => {
    await new Promise((resolve) => setTimeout(resolve, 600));
    return new Response("slow");
  });
  let gateway: GatewayProcess | null = null;
  try {
    gateway = await startGatewayProcess(config(fast));
    const cmdline = new TextDecoder().decode(
      new Deno.Command("cat", { args: [`/proc/${gateway.child.pid}/cmdline`] }).outputSync()
        .stdout,
    ).split("\0");
    const path = cmdline[cmdline.indexOf("--config", 2) + 1];
    const file = JSON.parse(await Deno.readTextFile(path));
    file.services.slow = { prefix: "/slow", upstreams: [slow.origin] };
    await Deno.writeTextFile(path, JSON.stringify(file));
    gateway.child.kill("SIGHUP");
    // The main thread's reload, then each worker's.
    await waitFor(
      () => gateway!.lines.filter((line) => line.msg === "config reloaded").length === 3,
      { what: "the main thread and both workers reloaded" },
    );

    // Ten slow requests on fresh connections (both workers get some), then SIGTERM.
    const requests = Array.from(
      { length: 10 },
      () =>
        getFresh(`${gateway!.url}/slow/x`).then(async (response) => ({
          status: response.status,
          body: await response.text(),
        })),
    );
    await waitFor(() => slow.requests.length === 10, { what: "all ten reached the upstream" });
    const stopped = gateway.stop("SIGTERM");
    const answers = await within(Promise.all(requests), 10_000, "the slow requests finished");
    for (const answer of answers) assert.deepEqual(answer, { status: 200, body: "slow" });
    assert.equal((await within(stopped, 10_000, "exit")).code, 0, gateway.stderr());
    assert.ok(gateway.lines.some((line) => line.msg === "shutdown complete" && line.clean));
    gateway = null;
  } finally {
    await gateway?.stop("SIGKILL");
    await closeAll({ fast, slow });
  }
});

Deno.test("workers 2: a public port taken by another program stops start-up, exit 1", async () => {
  // Not SO_REUSEPORT: the kernel refuses the workers' sockets on it.
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const result = await within(
      runGatewayExpectingExit(JSON.stringify({
        workers: 2,
        listen: { hostname: "127.0.0.1", port: taken.addr.port },
        admin: { hostname: "127.0.0.1", port: 0 },
        kv: { path: ":memory:" },
        services: { api: { prefix: "/api", upstreams: ["http://127.0.0.1:9"] } },
      })),
      20_000,
      "the gateway exits",
    );
    assert.equal(result.code, 1, result.stderr);
    assert.match(
      result.stderr,
      new RegExp(`cannot listen on 127\\.0\\.0\\.1:${taken.addr.port} \\(public\\): the address`),
    );
  } finally {
    taken.close();
  }
});

Deno.test("workers 2: one health prober for the instance; its verdict steers both workers", async () => {
  const good = startUpstream(() => new Response("good"));
  let badProbes = 0;
  const bad = startUpstream((request) => {
    if (new URL(request.url).pathname === "/health") {
      badProbes++;
      return new Response(null, { status: 503 });
    }
    return new Response("bad");
  });
  let gateway: GatewayProcess | null = null;
  try {
    gateway = await startGatewayProcess({
      workers: 2,
      services: {
        api: {
          prefix: "/api",
          upstreams: [good.origin, bad.origin],
          healthCheck: { intervalMs: 200, unhealthyThreshold: 2 },
        },
      },
    });
    // Both workers (and the main thread) see the bad upstream fail its checks.
    await waitFor(async () => {
      for (let i = 0; i < 10; i++) {
        const response = await getFresh(`${gateway!.url}/api/x`);
        if ((await response.text()) !== "good") return false;
      }
      return true;
    }, { timeoutMs: 10_000, what: "every worker keeps to the healthy upstream" });
    // One prober: a result younger than 90% of the 200 ms interval is reused, so real probes
    // are at least 180 ms apart and 8 of them take at least 7 x 180 ms; three probers (the main
    // thread and two workers, each on its own phase) would send 8 in about 0.55 s.
    const before = badProbes;
    const from = Date.now();
    await waitFor(() => badProbes - before >= 8, { timeoutMs: 10_000, what: "8 probes" });
    const elapsedMs = Date.now() - from;
    assert.ok(elapsedMs >= 1260, `8 probes in ${elapsedMs} ms`);
    assert.equal((await gateway.stop("SIGTERM")).code, 0, gateway.stderr());
    gateway = null;
  } finally {
    await gateway?.stop("SIGKILL");
    await closeAll({ good, bad });
  }
});

Deno.test("workers auto: as many as the cgroup quota or the cores allow", async () => {
  const upstream = startUpstream(() => new Response("ok"));
  let gateway: GatewayProcess | null = null;
  try {
    gateway = await startGatewayProcess({ ...config(upstream), workers: "auto" });
    const expected = resolveWorkerCount("auto", readCgroupLimits());
    const listening = gateway.lines.find((line) => line.msg === "listening")!;
    // One worker is the single-threaded gateway, whose listening line names no workers.
    assert.equal(listening.workers ?? 1, expected);
    const response = await getFresh(`${gateway.url}/api/x`);
    assert.equal(await response.text(), "ok");
    assert.equal((await gateway.stop("SIGTERM")).code, 0, gateway.stderr());
    gateway = null;
  } finally {
    await gateway?.stop("SIGKILL");
    await closeAll({ upstream });
  }
});
