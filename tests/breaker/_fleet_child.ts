/**
 * One "gateway instance" for the multi-process overshoot test: a FleetBreaker on a shared KV
 * file in front of a failing upstream, sending one call at a time every `paceMs`.
 *
 * Args: kvPath instanceId upstreamUrl startAtMs runForMs paceMs
 * Prints JSON: { sent, firstRejectAtMs, instanceId }.
 */
import { createFleetBreaker } from "../../src/breaker/mod.ts";
import { policy } from "./_helpers.ts";

const [path, instanceId, upstreamUrl, startAtText, runForText, paceText] = Deno.args;
const kv = await Deno.openKv(path);
const breaker = createFleetBreaker({
  kv,
  services: { users: policy({ failureThreshold: 5, recoveryTimeoutMs: 60_000 }) },
  instanceId,
});
await breaker.start();
const startAtMs = Number(startAtText);
await new Promise((resolve) => setTimeout(resolve, Math.max(0, startAtMs - Date.now())));
let sent = 0;
let firstRejectAtMs: number | null = null;
const client = Deno.createHttpClient({});
while (Date.now() < startAtMs + Number(runForText)) {
  const admission = breaker.admit("users");
  if (admission.allowed) {
    sent++;
    const startedMs = performance.now();
    // A hung upstream must end the child (and fail the test), not stall it.
    const response = await fetch(upstreamUrl, { client, signal: AbortSignal.timeout(5000) });
    await response.body?.cancel();
    breaker.record("users", admission, {
      status: response.status,
      durationMs: performance.now() - startedMs,
    });
  } else {
    firstRejectAtMs ??= Date.now();
  }
  await new Promise((resolve) => setTimeout(resolve, Number(paceText)));
}
client.close();
await breaker.close();
kv.close();
console.log(JSON.stringify({ sent, firstRejectAtMs, instanceId }));
