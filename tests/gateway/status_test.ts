import assert from "node:assert/strict";
import type { BreakerView } from "../../src/breaker/types.ts";
import { parseConfig } from "../../src/config/schema.ts";
import { buildService } from "../../src/gateway/build_service.ts";
import {
  createStatusViews,
  metricsSources,
  readiness,
  type StatusViews,
} from "../../src/gateway/status.ts";
import type { UpstreamClient } from "../../src/proxy/upstream_client.ts";

const client: UpstreamClient = {
  send: () => Promise.reject(new Error("not in this test")),
  close() {},
};

function views(): { status: StatusViews; close: () => Promise<void> } {
  const config = parseConfig({
    services: {
      plain: { prefix: "/p", upstreams: ["http://127.0.0.1:1"] },
      ejecting: {
        prefix: "/e",
        upstreams: ["http://127.0.0.1:2", "http://127.0.0.1:3"],
        pool: { maxConnections: 7 },
        outlierDetection: { consecutiveFailures: 1 },
        breaker: { failureThreshold: 9 },
      },
    },
  });
  const services = Object.values(config.services).map((service) =>
    buildService(service, { client, now: () => 0 })
  );
  services[1].onAttempt(services[1].balancer.endpoints[0], { status: 502, durationMs: 1 });
  services[1].limiter.acquire();
  return {
    status: createStatusViews(services),
    close: async () => {
      await Promise.all(services.map((service) => service.close()));
    },
  };
}

function breakerView(service: string): BreakerView {
  return {
    service,
    state: "closed",
    failuresInWindow: 1,
    failureThreshold: 5,
    openedAt: null,
    nextProbeAt: null,
    generation: 0,
    openCount: 0,
    degraded: false,
  };
}

const breaker = (degraded: boolean) => ({
  views: () => [breakerView("plain"), breakerView("ejecting")],
  degraded: () => degraded,
});

Deno.test("status views: pools, upstreams (health only where configured) and static facts", async () => {
  const { status, close } = views();
  assert.deepEqual(status.serviceNames, ["plain", "ejecting"]);
  assert.deepEqual(status.services.ejecting, { prefix: "/e", failureThreshold: 9 });
  assert.deepEqual(status.poolUsage(), {
    plain: { active: 0, pending: 0, max: 20 },
    ejecting: { active: 1, pending: 0, max: 7 },
  });
  const upstreams = status.upstreams();
  assert.deepEqual(upstreams.plain, [{
    origin: "http://127.0.0.1:1",
    available: true,
    inFlight: 0,
  }]);
  assert.equal(upstreams.ejecting[0].available, false);
  assert.equal(upstreams.ejecting[0].ejected, true);
  assert.equal(upstreams.ejecting[1].healthy, true);
  await close();
});

Deno.test("readiness: starting and draining are 503, degraded still serves", async () => {
  const { status, close } = views();
  const at = (started: boolean, draining: boolean, degraded: boolean) =>
    readiness({ started, draining }, "i-1", breaker(degraded), status);
  assert.equal(at(false, false, false).body.status, "starting");
  assert.equal(at(false, false, false).httpStatus, 503);
  assert.equal(at(true, true, false).body.status, "draining");
  assert.equal(at(true, true, false).httpStatus, 503);
  assert.equal(at(true, false, true).body.status, "degraded");
  assert.equal(at(true, false, true).httpStatus, 200);
  const ready = at(true, false, false);
  assert.equal(ready.body.status, "ready");
  assert.equal(ready.body.instanceId, "i-1");
  assert.deepEqual(ready.body.services.ejecting.pool, { active: 1, pending: 0, max: 7 });
  assert.equal(ready.body.services.ejecting.upstreams?.length, 2);
  assert.equal(ready.body.services.plain.failuresInWindow, 1);
  await close();
});

Deno.test("metrics sources read the same views", async () => {
  const { status, close } = views();
  const sources = metricsSources(breaker(true), status);
  assert.deepEqual(sources.pools()[1], { service: "ejecting", active: 1, pending: 0, max: 7 });
  assert.deepEqual(sources.breakerStates(), [
    { service: "plain", state: "closed" },
    { service: "ejecting", state: "closed" },
  ]);
  assert.equal(sources.kvDegraded?.(), true);
  assert.deepEqual(sources.upstreams?.().map((u) => [u.service, u.upstream, u.available]), [
    ["plain", "http://127.0.0.1:1", true],
    ["ejecting", "http://127.0.0.1:2", false],
    ["ejecting", "http://127.0.0.1:3", true],
  ]);
  await close();
});
