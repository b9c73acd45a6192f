import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/schema.ts";
import { buildService } from "../../src/gateway/build_service.ts";
import type { UpstreamClient, UpstreamRequest } from "../../src/proxy/upstream_client.ts";
import { waitFor } from "../_helpers/wait.ts";

function configOf(service: Record<string, unknown>) {
  return parseConfig({
    services: {
      s: { prefix: "/s", upstreams: ["http://127.0.0.1:1", "http://127.0.0.1:2"], ...service },
    },
  }).services.s;
}

const idleClient: UpstreamClient = {
  send: () => Promise.reject(new Error("not in this test")),
  close() {},
};

Deno.test("buildService: an ejected upstream comes back on the first pick after its time", async () => {
  let now = 0;
  const changes: string[] = [];
  const service = buildService(
    configOf({
      outlierDetection: { consecutiveFailures: 2, baseEjectionMs: 100, maxEjectionPercent: 50 },
    }),
    {
      client: idleClient,
      now: () => now,
      onAvailabilityChange: (_s, _e, _a, reason) => changes.push(reason),
    },
  );
  const [first, second] = service.balancer.endpoints;
  service.onAttempt(second, { status: 503, durationMs: 1 });
  service.onAttempt(second, { error: "timeout", durationMs: 1 });
  assert.equal(second.available, false);
  assert.equal(service.balancer.pick(), first);
  assert.equal(service.balancer.pick(), first);
  now = 100;
  service.balancer.pick();
  assert.equal(second.available, true, "refreshed by the pick, no timer");
  assert.deepEqual(changes, ["outlier_ejected", "ejection_ended"]);
  assert.equal(service.healthOf(second)?.ejections, 1);
  await service.close();
});

Deno.test("buildService: without health settings its views carry no health", async () => {
  const service = buildService(configOf({}), { client: idleClient, now: () => 0 });
  assert.equal(service.healthOf(service.balancer.endpoints[0]), undefined);
  // Outcomes are still taken (nothing listens): no throw, nothing ejected.
  service.onAttempt(service.balancer.endpoints[0], { status: 500, durationMs: 1 });
  assert.equal(service.balancer.endpoints[0].available, true);
  await service.close();
});

Deno.test("buildService: the adaptive limit moves the service's limiter", async () => {
  let now = 0;
  const limits: number[] = [];
  const service = buildService(
    configOf({
      pool: { maxConnections: 40 },
      adaptiveConcurrency: { enabled: true, minLimit: 2, tolerance: 1.5, sampleWindowMs: 100 },
    }),
    { client: idleClient, now: () => now, onLimitChange: (_s, limit) => limits.push(limit) },
  );
  const endpoint = service.balancer.endpoints[0];
  // A fast window sets the baseline; a much slower one shrinks the limit.
  for (let i = 0; i < 10; i++) service.onAttempt(endpoint, { status: 200, durationMs: 10 });
  now = 100;
  service.onAttempt(endpoint, { status: 200, durationMs: 10 });
  for (let i = 0; i < 10; i++) service.onAttempt(endpoint, { status: 200, durationMs: 100 });
  now = 200;
  service.onAttempt(endpoint, { status: 200, durationMs: 100 });
  assert.ok(limits.length >= 1, "the limit moved");
  assert.equal(service.limiter.limit(), limits.at(-1));
  assert.ok(service.limiter.limit() < 40);
  await service.close();
});

Deno.test("buildService: health probes go through the service's client and end its stream", async () => {
  const probes: UpstreamRequest[] = [];
  const client: UpstreamClient = {
    send(request) {
      probes.push(request);
      return Promise.resolve(new Response("fine"));
    },
    close() {},
  };
  const service = buildService(
    configOf({ healthCheck: { path: "/ping", intervalMs: 60_000 } }),
    { client, now: () => 0 },
  );
  await waitFor(() => probes.length === 2, { timeoutMs: 2000, what: "one probe per upstream" });
  assert.deepEqual(probes.map((p) => [p.origin, p.pathAndQuery, p.method]), [
    ["http://127.0.0.1:1", "/ping", "GET"],
    ["http://127.0.0.1:2", "/ping", "GET"],
  ]);
  assert.deepEqual(probes[0].headers, [["user-agent", "breakwater-health-check"]]);
  await service.close();
});
