/**
 * What an upstream's state means, as the dashboard and `GET /admin/breakers` show it: built
 * services (buildService) with real attempt outcomes fed in, read through the status views.
 */
import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/schema.ts";
import { buildService } from "../../src/gateway/build_service.ts";
import { createStatusViews } from "../../src/gateway/status.ts";
import { createUpstreamFailures } from "../../src/gateway/upstream_failures.ts";
import type { UpstreamClient } from "../../src/proxy/upstream_client.ts";
import { waitFor } from "../_helpers/wait.ts";

const client: UpstreamClient = {
  send: () => Promise.reject(new Error("not in this test")),
  close() {},
};

Deno.test("upstream failures: the latest one, in a row until a success, aborts ignored", () => {
  let now = 1_000;
  const failures = createUpstreamFailures(() => now);
  const origin = "http://10.0.0.1:80";
  assert.deepEqual(failures.view(origin), { lastFailure: null, failuresInARow: 0 });
  failures.record(origin, { status: 200 });
  assert.deepEqual(failures.view(origin), { lastFailure: null, failuresInARow: 0 });
  failures.record(origin, { status: 503 });
  now = 2_000;
  failures.record(origin, { error: "timeout" });
  failures.record(origin, { error: "aborted" });
  failures.record(origin, { status: 404 }); // the request's problem, not the upstream's
  assert.deepEqual(failures.view(origin), {
    lastFailure: { atMs: 2_000, status: null, error: "timeout" },
    failuresInARow: 0,
  });
  failures.record(origin, { status: 502 });
  now = 3_000;
  failures.record(origin, { error: "unreachable" });
  assert.deepEqual(failures.view(origin), {
    lastFailure: { atMs: 3_000, status: null, error: "unreachable" },
    failuresInARow: 2,
  });
});

Deno.test("upstream states: in rotation without checks, ejected until a time", async () => {
  const config = parseConfig({
    services: {
      plain: { prefix: "/p", upstreams: ["http://127.0.0.1:1"] },
      ejecting: {
        prefix: "/e",
        upstreams: ["http://127.0.0.1:2", "http://127.0.0.1:3"],
        outlierDetection: { consecutiveFailures: 1, baseEjectionMs: 30_000 },
        healthCheck: { path: "/healthz", intervalMs: 60_000 },
      },
    },
  });
  const services = Object.values(config.services).map((service) =>
    buildService(service, { client, now: () => 0 })
  );
  try {
    const [plain, ejecting] = services;
    for (let i = 0; i < 3; i++) {
      plain.onAttempt(plain.balancer.endpoints[0], { status: 503, durationMs: 1 });
    }
    ejecting.onAttempt(ejecting.balancer.endpoints[0], { status: 502, durationMs: 1 });
    const wallMs = 1_700_000_000_000;
    const states = createStatusViews(services, () => wallMs).upstreamStates();

    const [p] = states.plain;
    assert.equal(p.rotation, "in");
    assert.equal(p.available, true);
    assert.equal(p.healthCheckPath, null);
    assert.equal(p.outlierDetection, false);
    assert.equal(p.lastFailure?.status, 503);
    assert.equal(p.failuresInARow, 3);

    const [ejected, other] = states.ejecting;
    assert.equal(ejected.rotation, "ejected");
    assert.equal(ejected.available, false);
    assert.equal(ejected.ejectedUntilMs, wallMs + 30_000);
    assert.equal(ejected.healthCheckPath, "/healthz");
    assert.equal(ejected.lastFailure?.status, 502);
    assert.equal(other.rotation, "in");
    assert.equal(other.ejectedUntilMs, null);
    assert.equal(other.lastFailure, null);
  } finally {
    await Promise.all(services.map((service) => service.close()));
  }
});

Deno.test("upstream states: an upstream failing its health check is out, and says so", async () => {
  const config = parseConfig({
    services: {
      checked: {
        prefix: "/c",
        upstreams: ["http://127.0.0.1:4"],
        healthCheck: { path: "/health", intervalMs: 20, unhealthyThreshold: 1 },
      },
    },
  });
  // The probe's answer: a 503 from the health path.
  const sick: UpstreamClient = {
    send: () => Promise.resolve(new Response(null, { status: 503 })),
    close() {},
  };
  const [service] = Object.values(config.services).map((s) =>
    buildService(s, { client: sick, now: () => performance.now() })
  );
  try {
    const views = createStatusViews([service]);
    await waitFor(() => views.upstreamStates().checked[0].rotation === "failing_health_check", {
      what: "the health check to fail",
    });
    const [state] = views.upstreamStates().checked;
    assert.equal(state.available, false);
    assert.equal(state.healthy, false);
    assert.equal(state.healthCheckPath, "/health");
    assert.equal(state.ejectedUntilMs, null);
  } finally {
    await service.close();
  }
});
