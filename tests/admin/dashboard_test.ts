/**
 * The dashboard's routes through `app.request()` of a real gateway (createGateway + parseConfig,
 * KV in memory): the page and its CSP, the script and style, and the live JSON the page polls.
 * The browser behaviour itself is tested in tests/e2e/dashboard_browser_test.ts.
 */
import assert from "node:assert/strict";
import { createGateway, type Gateway } from "../../src/app.ts";
import { parseConfig } from "../../src/config/schema.ts";
import { createLogger } from "../../src/telemetry/mod.ts";
import {
  CHART_SECONDS,
  DASHBOARD_CSP,
  type DashboardSnapshot,
  dashboardSnapshot,
  type DashboardSource,
} from "../../src/admin/dashboard.ts";
import { DASHBOARD_SCRIPT } from "../../src/admin/dashboard_script.ts";
import { createTrafficStats } from "../../src/admin/traffic_stats.ts";

/** A loopback port nothing listens on: requests to it fail fast with "connection refused". */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

async function withGateway(
  env: Record<string, string | undefined>,
  run: (gateway: Gateway, deadOrigin: string) => Promise<void>,
): Promise<void> {
  const deadOrigin = `http://127.0.0.1:${closedPort()}`;
  const config = parseConfig({
    kv: { path: ":memory:" },
    telemetry: { prometheus: false },
    services: {
      users: { prefix: "/api/users", upstreams: [deadOrigin] },
      orders: {
        prefix: "/api/orders",
        upstreams: [deadOrigin],
        breaker: { failureThreshold: 2, recoveryTimeoutMs: 60_000 },
      },
    },
  });
  const gateway = createGateway(config, {
    env,
    logger: createLogger({ level: "off", write: () => {} }),
  });
  try {
    await gateway.ready;
    await run(gateway, deadOrigin);
  } finally {
    await gateway.close();
  }
}

async function snapshotOf(gateway: Gateway): Promise<DashboardSnapshot> {
  const response = await gateway.adminApp.request("/admin/dashboard.json");
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
  assert.equal(response.headers.get("cache-control"), "no-store");
  return await response.json();
}

async function until(check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

Deno.test("GET / serves the page with a strict CSP and nothing inline", async () => {
  await withGateway({}, async (gateway) => {
    const response = await gateway.adminApp.request("/");
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^text\/html/);
    const csp = response.headers.get("content-security-policy") ?? "";
    assert.equal(csp, DASHBOARD_CSP);
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|https?:/);
    assert.equal(response.headers.get("x-content-type-options"), "nosniff");
    assert.equal(response.headers.get("x-frame-options"), "DENY");
    const html = await response.text();
    assert.match(html, /<script src="\/dashboard.js" defer><\/script>/);
    assert.match(html, /<link rel="stylesheet" href="\/dashboard.css">/);
    // No inline script or style and no other origin: what the CSP promises, the page keeps.
    assert.doesNotMatch(html, /<script>|<script [^>]*>[^<]/);
    assert.doesNotMatch(html, /<style|\sstyle=|\son[a-z]+=/i);
    assert.doesNotMatch(html, /https?:\/\//);
    // The shell carries no data: service names only ever reach the page via textContent.
    assert.doesNotMatch(html, /users|orders/);
    assert.match(html, /<dialog id="token-dialog"/);
    assert.match(html, /aria-live="polite"/);
    assert.match(html, /name="viewport" content="width=device-width/);
  });
});

Deno.test("the script and style are served from the gateway itself", async () => {
  await withGateway({}, async (gateway) => {
    const script = await gateway.adminApp.request("/dashboard.js");
    assert.equal(script.status, 200);
    assert.match(script.headers.get("content-type") ?? "", /^text\/javascript/);
    const source = await script.text();
    assert.equal(source, DASHBOARD_SCRIPT);
    // It parses (it is never executed here), and uses no HTML sinks, eval or logging.
    new Function(source);
    assert.doesNotMatch(source, /innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
    assert.doesNotMatch(source, /\beval\(|new Function|console\.|localStorage/);
    assert.match(source, /sessionStorage/);
    assert.match(source, /"authorization": "Bearer " \+ token/);

    const style = await gateway.adminApp.request("/dashboard.css");
    assert.equal(style.status, 200);
    assert.match(style.headers.get("content-type") ?? "", /^text\/css/);
    assert.match(await style.text(), /:focus-visible/);
  });
});

Deno.test("dashboard.json: one entry per service in config order, with everything a card shows", async () => {
  await withGateway({}, async (gateway, deadOrigin) => {
    const before = Date.now();
    const snapshot = await snapshotOf(gateway);
    assert.ok(snapshot.nowMs >= before && snapshot.nowMs <= Date.now());
    assert.equal(snapshot.degraded, false);
    assert.equal(snapshot.writesEnabled, false);
    assert.deepEqual(snapshot.services.map((s) => s.service), ["users", "orders"]);
    const [users, orders] = snapshot.services;
    assert.equal(users.prefix, "/api/users");
    assert.equal(users.breaker.state, "closed");
    assert.equal(users.breaker.failureThreshold, 5);
    assert.equal(orders.breaker.failureThreshold, 2);
    assert.equal(users.breaker.failuresInWindow, 0);
    assert.equal(users.breaker.nextProbeAt, null);
    assert.deepEqual(users.pool, { active: 0, pending: 0, max: 20 });
    assert.deepEqual(users.upstreams, [{
      origin: deadOrigin,
      available: true,
      inFlight: 0,
      rotation: "in",
      healthCheckPath: null,
      outlierDetection: false,
      ejectedUntilMs: null,
      lastFailure: null,
      failuresInARow: 0,
    }]);
    assert.equal(users.traffic.requests.length, CHART_SECONDS);
    assert.equal(users.traffic.stepMs, 1000);
    assert.deepEqual(users.recent, {
      seconds: 10,
      requestsPerSecond: 0,
      errorRatio: null,
      p50Ms: null,
      p99Ms: null,
    });
  });
});

Deno.test("dashboard.json follows the breaker open and the traffic, live", async () => {
  await withGateway({}, async (gateway) => {
    for (let i = 0; i < 3; i++) {
      const response = await gateway.app.request("http://gateway.test/api/orders/1");
      assert.equal(response.status >= 500, true);
      await response.body?.cancel();
    }
    await until(async () => {
      const orders = (await snapshotOf(gateway)).services[1];
      return orders.breaker.state === "open";
    });
    const opened = (await snapshotOf(gateway)).services[1];
    assert.ok(opened.breaker.openedAt !== null);
    assert.ok(opened.breaker.nextProbeAt !== null && opened.breaker.nextProbeAt > Date.now());
    // No health check and no outlier detection: still in rotation, and the card can say why
    // and what it last did (refused connections, two in a row before the breaker opened).
    const [upstream] = opened.upstreams;
    assert.equal(upstream.rotation, "in");
    assert.equal(upstream.healthCheckPath, null);
    assert.equal(upstream.lastFailure?.error, "unreachable");
    assert.equal(upstream.lastFailure?.status, null);
    assert.equal(upstream.failuresInARow, 2);

    // Traffic shows complete seconds only: wait for the second the requests fell in to end.
    await until(async () => (await snapshotOf(gateway)).services[1].recent.requestsPerSecond > 0);
    const traffic = (await snapshotOf(gateway)).services[1];
    assert.equal(traffic.traffic.requests.reduce((a, b) => a + b, 0), 3);
    assert.equal(traffic.traffic.errors.reduce((a, b) => a + b, 0), 3);
    assert.equal(traffic.recent.errorRatio, 1);
    assert.ok(traffic.recent.p50Ms !== null && traffic.recent.p99Ms !== null);
    // The other service saw nothing.
    assert.equal((await snapshotOf(gateway)).services[0].breaker.state, "closed");
  });
});

Deno.test("steering shows up in dashboard.json; writes need the token", async () => {
  await withGateway({ BREAKWATER_ADMIN_TOKEN: "s3cret" }, async (gateway) => {
    assert.equal((await snapshotOf(gateway)).writesEnabled, true);
    const post = (token: string) =>
      gateway.adminApp.request("/admin/breakers/users", {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ action: "close" }),
      });
    const refused = await post("wrong");
    assert.equal(refused.status, 401);
    await refused.body?.cancel();
    const accepted = await post("s3cret");
    assert.equal(accepted.status, 200);
    assert.equal((await accepted.json()).state, "forced_closed");
    assert.equal((await snapshotOf(gateway)).services[0].breaker.state, "forced_closed");
    // The machine-readable twin agrees.
    const twin = await (await gateway.adminApp.request("/admin/breakers")).json();
    assert.equal(twin.services[0].state, "forced_closed");
  });
});

Deno.test("every instance's dashboard shows the fleet's breakers (two gateways, one KV file)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "breakwater-dashboard-" });
  const config = parseConfig({
    kv: { path: `${dir}/fleet.kv` },
    telemetry: { prometheus: false },
    services: { users: { prefix: "/api/users", upstreams: [`http://127.0.0.1:${closedPort()}`] } },
  });
  const logger = createLogger({ level: "off", write: () => {} });
  const env = { BREAKWATER_ADMIN_TOKEN: "s3cret" };
  const first = createGateway(config, { env, logger, instanceId: "a" });
  const second = createGateway(config, { env, logger, instanceId: "b" });
  try {
    await Promise.all([first.ready, second.ready]);
    const forced = await first.adminApp.request("/admin/breakers/users", {
      method: "POST",
      headers: { authorization: "Bearer s3cret", "content-type": "application/json" },
      body: JSON.stringify({ action: "open" }),
    });
    assert.equal(forced.status, 200);
    await forced.body?.cancel();
    await until(async () => (await snapshotOf(second)).services[0].breaker.state === "forced_open");
  } finally {
    await first.close();
    await second.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dashboardSnapshot: headline numbers over the last seconds", () => {
  let now = 1_000_000_000;
  const traffic = createTrafficStats(300, () => now);
  // 10 s ago: 20 requests, 5 errors; 3 s ago: 10 requests at ~8 ms; last second: nothing.
  now -= 10_000;
  for (let i = 0; i < 20; i++) traffic.record("a", i < 5 ? 502 : 200, 2);
  now += 7_000;
  for (let i = 0; i < 10; i++) traffic.record("a", 200, 8);
  now += 3_000;
  const source: DashboardSource = {
    breaker: {
      degraded: () => true,
      view: (service) => ({
        service,
        state: "half_open",
        failuresInWindow: 0,
        failureThreshold: 5,
        openedAt: now - 30_000,
        nextProbeAt: now,
        generation: 3,
        openCount: 2,
        degraded: true,
      }),
    },
    poolUsage: () => ({}),
    traffic,
    upstreams: () => ({}),
    upstreamStates: () => ({}),
    services: { a: { prefix: "/a", failureThreshold: 5 } },
    serviceNames: ["a"],
    writesEnabled: true,
    nowMs: () => now,
  };
  const snapshot = dashboardSnapshot(source);
  assert.equal(snapshot.nowMs, now);
  assert.equal(snapshot.degraded, true);
  const [a] = snapshot.services;
  assert.equal(a.pool, null);
  assert.deepEqual(a.upstreams, []);
  assert.equal(a.recent.requestsPerSecond, 3);
  assert.equal(a.recent.errorRatio, Number((5 / 30).toPrecision(3)));
  // The latest second with traffic: the 8 ms one (within one ~12% bucket).
  assert.ok(a.recent.p50Ms! >= 8 && a.recent.p50Ms! <= 9, `${a.recent.p50Ms}`);
  assert.equal(a.traffic.requests.length, CHART_SECONDS);
  assert.equal(a.traffic.startMs, now - CHART_SECONDS * 1000);
  assert.equal(a.traffic.requests.at(-10), 20);
  assert.equal(a.traffic.requests.at(-3), 10);
});
