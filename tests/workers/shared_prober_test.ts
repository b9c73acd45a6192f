/** One health prober per instance: the main thread's and the workers' probes share results. */
import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/schema.ts";
import { createProbeClient, createSharedProber } from "../../src/workers/shared_prober.ts";
import { startUpstream } from "../_helpers/upstream.ts";
import { closeAll } from "../_helpers/wait.ts";

Deno.test("shared prober: one real probe per interval for the main thread and its workers", async () => {
  let healthy = true;
  const upstream = startUpstream((request) =>
    new URL(request.url).pathname === "/health"
      ? new Response(null, { status: healthy ? 200 : 503 })
      : new Response("ok")
  );
  try {
    const service = parseConfig({
      services: {
        a: { prefix: "/a", upstreams: [upstream.origin], healthCheck: { intervalMs: 1000 } },
      },
    }).services.a;
    let nowMs = 0;
    const prober = createSharedProber({ now: () => nowMs });
    const send = async (origin: string, path: string, signal: AbortSignal) => {
      const response = await fetch(origin + path, { signal });
      await response.body?.cancel();
      return response.status;
    };
    const mainProbe = prober.through(send, service);
    // Two workers whose requests reach the main thread at once (postMessage stands in).
    const workers = [0, 1].map(() => {
      const client = createProbeClient((message) => {
        prober.probe(
          message.service,
          message.origin,
          message.path,
          message.intervalMs,
          message.timeoutMs,
        ).then(
          (status) => client.answer(message.id, status, null),
          (error) => client.answer(message.id, null, String(error)),
        );
      });
      return client.through(send, service);
    });
    // A worker asking before the main thread's first probe is answered (one probe).
    assert.equal(await workers[0](upstream.origin, "/health", AbortSignal.timeout(2000)), 200);
    assert.equal(upstream.requests.length, 1);
    const all = () =>
      Promise.all(
        [mainProbe, ...workers].map((probe) =>
          probe(upstream.origin, "/health", AbortSignal.timeout(2000))
        ),
      );
    assert.deepEqual(await all(), [200, 200, 200]);
    assert.equal(upstream.requests.length, 1, "three askers, one probe");
    nowMs = 850;
    assert.deepEqual(await all(), [200, 200, 200]);
    assert.equal(upstream.requests.length, 1, "still fresh at 85% of the interval");
    healthy = false;
    nowMs = 950;
    assert.deepEqual(await all(), [503, 503, 503], "past 90%: probed again, all see it");
    assert.equal(upstream.requests.length, 2);
    await assert.rejects(
      prober.probe("a", "http://127.0.0.1:9", "/health", 1000, 1000),
      /probes no/,
      "a worker cannot make the main thread probe what it does not probe itself",
    );
    const aborted = new AbortController();
    aborted.abort(new Error("gone"));
    await assert.rejects(workers[0](upstream.origin, "/health", aborted.signal), /gone/);
  } finally {
    await closeAll({ upstream });
  }
});

Deno.test("shared prober: two services on one origin keep their own probes and results", async () => {
  const upstream = startUpstream(() => new Response(null, { status: 204 }));
  try {
    const services = parseConfig({
      services: {
        a: { prefix: "/a", upstreams: [upstream.origin], healthCheck: { intervalMs: 1000 } },
        b: { prefix: "/b", upstreams: [upstream.origin], healthCheck: { intervalMs: 1000 } },
      },
    }).services;
    const prober = createSharedProber({ now: () => 0 });
    // Each service's own probe (as with different TLS settings: b's cannot get through).
    const viaA = async (origin: string, path: string, signal: AbortSignal) => {
      const response = await fetch(origin + path, { signal });
      await response.body?.cancel();
      return response.status;
    };
    const viaB = () => Promise.reject(new Error("b: certificate not trusted"));
    const mainA = prober.through(viaA, services.a);
    prober.through(viaB, services.b);
    assert.equal(await mainA(upstream.origin, "/health", AbortSignal.timeout(2000)), 204);
    // A worker's probe for b is b's, not a's fresh result for the same origin and path.
    await assert.rejects(
      prober.probe("b", upstream.origin, "/health", 1000, 1000),
      /not trusted/,
    );
    assert.equal(await prober.probe("a", upstream.origin, "/health", 1000, 1000), 204);
    assert.equal(upstream.requests.length, 1, "a's result shared with a's askers only");
  } finally {
    await closeAll({ upstream });
  }
});
