import assert from "node:assert/strict";
import { createHealthState, startHealthChecks } from "../../src/health/active.ts";
import { createUpstreamHealth, isUpstreamFailure } from "../../src/health/mod.ts";
import { endpointOf } from "../../src/proxy/balancer.ts";
import { waitFor, within } from "../_helpers/wait.ts";

Deno.test("health thresholds: unhealthy after N failures, healthy after M successes", () => {
  const state = createHealthState({ healthyThreshold: 3, unhealthyThreshold: 2 });
  assert.equal(state.healthy, true);
  assert.equal(state.record(false), false);
  assert.equal(state.record(true), false);
  assert.equal(state.record(false), false);
  assert.equal(state.record(false), true);
  assert.equal(state.healthy, false);
  assert.equal(state.record(true), false);
  assert.equal(state.record(true), false);
  assert.equal(state.record(false), false);
  assert.equal(state.record(true), false);
  assert.equal(state.record(true), false);
  assert.equal(state.record(true), true);
  assert.equal(state.healthy, true);
});

Deno.test("what counts against an upstream: 5xx, refused/reset, timeout; not 4xx or aborts", () => {
  assert.equal(isUpstreamFailure({ status: 503 }), true);
  assert.equal(isUpstreamFailure({ status: 404 }), false);
  assert.equal(isUpstreamFailure({ status: 200 }), false);
  assert.equal(isUpstreamFailure({ error: "unreachable" }), true);
  assert.equal(isUpstreamFailure({ error: "timeout" }), true);
  assert.equal(isUpstreamFailure({ error: "aborted" }), false);
});

Deno.test("health checks probe every interval, time out slow probes and stop cleanly", async () => {
  const calls: string[] = [];
  const changes: [number, boolean][] = [];
  let healthy = false;
  const checks = startHealthChecks({
    origins: ["http://a", "http://b"],
    path: "/health",
    intervalMs: 10,
    timeoutMs: 30,
    healthyThreshold: 2,
    unhealthyThreshold: 2,
    probe: (origin, _path, signal) => {
      calls.push(origin);
      if (origin === "http://a") return Promise.resolve(healthy ? 200 : 503);
      // b hangs until the probe's own timeout aborts it.
      return new Promise((_, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason))
      );
    },
    onChange: (index, isHealthy) => changes.push([index, isHealthy]),
  });
  try {
    await waitFor(() => changes.length >= 2, {
      timeoutMs: 2000,
      what: "both upstreams marked down (a 503 and a probe that hangs past timeoutMs)",
    });
    assert.deepEqual(changes.toSorted(), [[0, false], [1, false]]);
    healthy = true;
    await waitFor(() => checks.state(0).healthy, {
      timeoutMs: 2000,
      what: "upstream a marked up again after healthyThreshold successes",
    });
    assert.deepEqual(changes.at(-1), [0, true]);
  } finally {
    // stop() waits for running probes: one that never ends (a broken timeout) fails here.
    await within(checks.stop(), 2000, "health checks to stop");
  }
  const count = calls.length;
  // Nothing to wait for: three intervals in which a probe that must not happen could show up.
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.equal(calls.length, count, "no probe after stop");
});

Deno.test("upstream health combines checks and ejections into endpoint.available", async () => {
  let now = 0;
  const endpoints = [endpointOf("http://127.0.0.1:1"), endpointOf("http://127.0.0.1:2")];
  const reasons: string[] = [];
  const health = createUpstreamHealth({
    endpoints,
    healthCheck: null,
    outlierDetection: {
      consecutiveFailures: 2,
      baseEjectionMs: 100,
      maxEjectionMs: 1000,
      maxEjectionPercent: 50,
    },
    probe: () => Promise.resolve(200),
    now: () => now,
    onChange: (_endpoint, _available, reason) => reasons.push(reason),
  });
  health.record(endpoints[1], { status: 502, durationMs: 1 });
  health.record(endpoints[1], { error: "aborted", durationMs: 1 });
  health.record(endpoints[1], { error: "unreachable", durationMs: 1 });
  assert.equal(endpoints[1].available, false);
  assert.equal(endpoints[0].available, true);
  assert.deepEqual(health.view(endpoints[1]), {
    healthy: true,
    ejected: true,
    ejectedForMs: 100,
    ejections: 1,
  });
  now = 100;
  health.refresh();
  assert.equal(endpoints[1].available, true);
  assert.deepEqual(reasons, ["outlier_ejected", "ejection_ended"]);
  await health.close();
});
