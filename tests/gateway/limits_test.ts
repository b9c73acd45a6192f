import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/schema.ts";
import { deriveLimits } from "../../src/gateway/limits.ts";

Deno.test("deriveLimits: the global limiter sums the queues and waits as long as any service", () => {
  const config = parseConfig({
    limits: { maxConnections: 64 },
    services: {
      a: {
        prefix: "/a",
        upstreams: ["http://127.0.0.1:1"],
        timeoutMs: 2000,
        pool: { maxPending: 10, queueTimeoutMs: 300 },
      },
      b: {
        prefix: "/b",
        upstreams: ["http://127.0.0.1:2"],
        timeoutMs: 9000,
        pool: { maxPending: 5, queueTimeoutMs: 1500 },
      },
    },
  });
  assert.deepEqual(deriveLimits(config), {
    global: { limit: 64, maxPending: 15, queueTimeoutMs: 1500 },
    // The longest timeoutMs plus 5 s: a probe's lease outlives the probe.
    probeLeaseMs: 14_000,
  });
});
