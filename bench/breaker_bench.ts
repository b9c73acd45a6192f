/**
 * Cost of one breaker decision on the request path: `admit()` with the breaker closed, open and
 * forced open, and `record()` of a success (what nearly every request pays) and of a 4xx. The
 * target is well under 1 us per decision (README, "Per request").
 *
 * The fleet breaker runs on a real `:memory:` KV: `start()` loads the records, then `close()`
 * stops the re-sync timer and the watch so the bench process can exit. Admission reads only the
 * in-memory snapshot, which stays in place after close(), so what is measured is exactly the
 * request-path cost with KV in charge.
 *
 * Run: deno bench --allow-read --allow-write bench/breaker_bench.ts
 */
import { createFleetBreaker } from "../src/breaker/mod.ts";
import type { BreakerConfig } from "../src/config/schema.ts";

const policy: BreakerConfig = {
  failureThreshold: 5,
  windowMs: 10_000,
  recoveryTimeoutMs: 3_600_000, // stays open for the whole run
  maxRecoveryTimeoutMs: 3_600_000,
  halfOpenProbes: 1,
  failureStatuses: [{ from: 500, to: 599 }],
  slowCallMs: null,
  minInstances: 1,
  holdBack: true,
};

const kv = await Deno.openKv(":memory:");
const fleet = createFleetBreaker({
  kv,
  services: { closed: policy, open: policy, forced: policy },
  instanceId: "bench",
});
await fleet.start();
// Trip "open" through the real path (failures -> KV report -> CAS), force "forced".
for (let failure = 0; failure < 5; failure++) {
  const admission = fleet.admit("open");
  if (admission.allowed) fleet.record("open", admission, { status: 503, durationMs: 1 });
}
await fleet.force("forced", "open");
const deadline = Date.now() + 2000;
while (fleet.view("open").generation === 0 && Date.now() < deadline) {
  await new Promise((resolve) => setTimeout(resolve, 5));
}
await fleet.close();
if (fleet.view("open").state !== "open" || fleet.view("forced").state !== "forced_open") {
  throw new Error("bench setup: breakers did not reach their states");
}

const local = createFleetBreaker({ kv: null, services: { closed: policy }, instanceId: "bench" });

const success = { status: 200, durationMs: 3 };
const clientError = { status: 404, durationMs: 3 };
let sink = 0;

Deno.bench("admit: closed (fleet on KV)", { group: "admit", baseline: true }, () => {
  sink += fleet.admit("closed").allowed ? 1 : 0;
});

Deno.bench("admit: open, rejected with Retry-After (fleet on KV)", { group: "admit" }, () => {
  const admission = fleet.admit("open");
  sink += admission.allowed ? 1 : admission.retryAfterMs;
});

Deno.bench("admit: forced_open (fleet on KV)", { group: "admit" }, () => {
  sink += fleet.admit("forced").allowed ? 1 : 0;
});

Deno.bench("admit: closed (local only, kv: null)", { group: "admit" }, () => {
  sink += local.admit("closed").allowed ? 1 : 0;
});

Deno.bench("admit + record success (fleet on KV)", { group: "record", baseline: true }, () => {
  const admission = fleet.admit("closed");
  if (admission.allowed) fleet.record("closed", admission, success);
});

Deno.bench("admit + record 404 (not a failure)", { group: "record" }, () => {
  const admission = fleet.admit("closed");
  if (admission.allowed) fleet.record("closed", admission, clientError);
});

globalThis.addEventListener("unload", () => {
  kv.close();
  if (sink === -1) console.log(sink);
});
