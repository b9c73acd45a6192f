/**
 * Three real processes, each a FleetBreaker on one shared KV file, in front of an upstream that
 * answers 503 to everything. Counted at the upstream: the failing calls it receives before the
 * fleet stops sending must stay within failureThreshold + the overshoot bound documented in
 * src/breaker/fleet_counts.ts, far below 3 x failureThreshold (what three independent breakers allow).
 */
import assert from "node:assert/strict";
import { tempKvPath } from "./_helpers.ts";

const THRESHOLD = 5;
const INSTANCES = 3;
const PACE_MS = 20;

Deno.test("processes: 3 instances on one KV file stop a failing upstream near the threshold", async () => {
  const file = await tempKvPath();
  const startAtMs = Date.now() + 1500;
  const received: number[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    received.push(Date.now());
    return new Response("down", { status: 503 });
  });
  try {
    const children = Array.from(
      { length: INSTANCES },
      (_, index) =>
        new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "--quiet",
            "--unstable-kv",
            "--allow-read",
            "--allow-write",
            "--allow-net=127.0.0.1",
            new URL("./_fleet_child.ts", import.meta.url).pathname,
            file.path,
            `gw-${index}`,
            `http://127.0.0.1:${server.addr.port}/`,
            String(startAtMs),
            "1500",
            String(PACE_MS),
          ],
          stdout: "piped",
          stderr: "piped",
          // A child that never finishes is killed, and its exit code fails the test.
          signal: AbortSignal.timeout(30_000),
        }).output(),
    );
    const outputs = await Promise.all(children);
    const reports = outputs.map((output) => {
      assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
      return JSON.parse(new TextDecoder().decode(output.stdout)) as {
        sent: number;
        firstRejectAtMs: number | null;
      };
    });
    // Bound from fleet_counts.ts: T + sum of min(T, C_i + ceil(r_i * 2R)). Here C_i = 1 (one call at a
    // time) and r_i * 2R <= 1 while a KV round trip R stays under PACE_MS / 2: T + 2 per
    // instance. (Measured: 7, i.e. T + 2 for the whole fleet.)
    const bound = THRESHOLD + INSTANCES * 2;
    assert.ok(
      received.length <= bound,
      `upstream received ${received.length} failing calls (bound ${bound})`,
    );
    assert.ok(received.length >= THRESHOLD);
    // Every instance stopped within 1 s of the trip (the T-th failure at the upstream).
    const tripAtMs = received[THRESHOLD - 1];
    for (const report of reports) {
      assert.notEqual(report.firstRejectAtMs, null);
      assert.ok(report.firstRejectAtMs! - tripAtMs < 1000, `${report.firstRejectAtMs! - tripAtMs}`);
    }
    console.log(
      `upstream saw ${received.length} failing calls (threshold ${THRESHOLD}, bound ${bound}); per instance ${
        reports.map((report) => report.sent)
      }`,
    );
  } finally {
    await server.shutdown();
    await file.remove();
  }
});
