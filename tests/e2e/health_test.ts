/**
 * Upstream health end to end: active health checks and passive outlier ejection take a bad
 * upstream out of rotation while the service keeps answering; both show in /readyz and
 * /admin/breakers.
 */
import assert from "node:assert/strict";
import { startTestGateway, type TestGateway } from "../_helpers/gateway.ts";
import {
  freePort,
  readRequestHead,
  startRawUpstream,
  startUpstream,
} from "../_helpers/upstream.ts";

interface UpstreamReport {
  origin: string;
  available: boolean;
  healthy?: boolean;
  ejected?: boolean;
  ejectedForMs?: number;
  ejections?: number;
}

async function readyUpstreams(gw: TestGateway, service: string): Promise<UpstreamReport[]> {
  const response = await fetch(`${gw.url}/readyz`);
  const body = await response.json();
  return body.services[service].upstreams;
}

async function waitFor(condition: () => Promise<boolean>, timeoutMs = 3000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

Deno.test("a dead upstream of two is found by health checks and the service keeps answering 200", async () => {
  const alive = startUpstream((request) =>
    new URL(request.url).pathname === "/health" ? new Response("ok") : new Response("alive")
  );
  const deadOrigin = `http://127.0.0.1:${freePort()}`;
  try {
    await using gw = await startTestGateway({
      services: {
        pair: {
          prefix: "/pair",
          upstreams: [alive.origin, deadOrigin],
          healthCheck: { path: "/health", intervalMs: 50, timeoutMs: 200, unhealthyThreshold: 2 },
        },
      },
    });
    await waitFor(async () =>
      (await readyUpstreams(gw, "pair")).some((u) => u.origin === deadOrigin && !u.available)
    );
    const upstreams = await readyUpstreams(gw, "pair");
    assert.deepEqual(
      upstreams.map(({ origin, available, healthy }) => ({ origin, available, healthy })),
      [
        { origin: alive.origin, available: true, healthy: true },
        { origin: deadOrigin, available: false, healthy: false },
      ],
    );
    // No retries configured: every request must go to the live upstream.
    for (let i = 0; i < 20; i++) {
      const response = await fetch(`${gw.url}/pair/x`);
      assert.equal(response.status, 200);
      assert.equal(await response.text(), "alive");
    }
    const breakers = await (await fetch(`${gw.adminUrl}/admin/breakers`)).json();
    const pair = breakers.services.find((s: { service: string }) => s.service === "pair");
    assert.equal(pair.state, "closed");
    assert.equal(pair.upstreams[1].available, false);
  } finally {
    await alive.close();
  }
});

Deno.test("an unhealthy upstream leaves the rotation and comes back after consecutive successes", async () => {
  let healthy = true;
  const a = startUpstream(() => new Response("a"));
  const b = startUpstream((request) =>
    new URL(request.url).pathname === "/health"
      ? new Response(null, { status: healthy ? 200 : 503 })
      : new Response("b")
  );
  try {
    await using gw = await startTestGateway({
      services: {
        flip: {
          prefix: "/flip",
          upstreams: [a.origin, b.origin],
          healthCheck: {
            path: "/health",
            intervalMs: 30,
            timeoutMs: 200,
            healthyThreshold: 3,
            unhealthyThreshold: 2,
          },
        },
      },
    });
    healthy = false;
    await waitFor(async () => !(await readyUpstreams(gw, "flip"))[1].available);
    const texts = await Promise.all(
      Array.from({ length: 10 }, () => fetch(`${gw.url}/flip/x`).then((r) => r.text())),
    );
    assert.deepEqual(new Set(texts), new Set(["a"]));

    healthy = true;
    await waitFor(async () => (await readyUpstreams(gw, "flip"))[1].available);
    const seen = new Set<string>();
    for (let i = 0; i < 10; i++) seen.add(await (await fetch(`${gw.url}/flip/x`)).text());
    assert.deepEqual(seen, new Set(["a", "b"]), "b is back in rotation");
  } finally {
    await a.close();
    await b.close();
  }
});

Deno.test("passive ejection: a resetting upstream of two is ejected before the breaker opens", async () => {
  const good = startUpstream(() => new Response("good"));
  const bad = startRawUpstream(async (conn) => {
    await readRequestHead(conn); // then closes: a reset before any response byte
  });
  try {
    await using gw = await startTestGateway({
      services: {
        mixed: {
          prefix: "/mixed",
          upstreams: [good.origin, bad.origin],
          // Every attempt counts for the breaker, so ejection (3 in a row) must act before it
          // would trip (5): the service-wide breaker never has to open for one bad upstream.
          breaker: { failureThreshold: 5 },
          retry: { attempts: 1, baseDelayMs: 1, maxDelayMs: 5 },
          outlierDetection: { consecutiveFailures: 3, baseEjectionMs: 5000 },
        },
      },
    });
    for (let i = 0; i < 30; i++) {
      const response = await fetch(`${gw.url}/mixed/x`);
      assert.equal(response.status, 200);
      assert.equal(await response.text(), "good");
    }
    // Three failures ejected it; the retries to the good upstream hid them from clients.
    assert.equal(bad.accepted(), 3);
    const [, report] = await readyUpstreams(gw, "mixed");
    assert.equal(report.available, false);
    assert.equal(report.ejected, true);
    assert.equal(report.ejections, 1);
    assert.ok(report.ejectedForMs! > 4000 && report.ejectedForMs! <= 5000);
    const breakers = await (await fetch(`${gw.adminUrl}/admin/breakers`)).json();
    const mixed = breakers.services.find((s: { service: string }) => s.service === "mixed");
    assert.equal(mixed.state, "closed", "the breaker never had to open");
    assert.equal(mixed.upstreams[1].ejected, true);
  } finally {
    await good.close();
    await bad.close();
  }
});
