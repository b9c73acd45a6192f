/**
 * The mirror across real threads: two Web Workers and the host on this thread over a real fleet
 * breaker. How long a trip caused at one worker takes to reach the other.
 */
import assert from "node:assert/strict";
import { createFleetBreaker } from "../../src/breaker/fleet.ts";
import { createBreakerHost } from "../../src/workers/breaker_host.ts";
import type { FromWorker, ToWorker } from "../../src/workers/protocol.ts";
import { policy } from "../breaker/_helpers.ts";
import { waitFor, within } from "../_helpers/wait.ts";

interface Seen {
  type: "seen";
  state: string;
  admitted: boolean;
  atMs: number;
}

Deno.test("mirror across threads: a trip at one worker stops the other within milliseconds", async () => {
  const real = createFleetBreaker({
    kv: null,
    services: { users: policy({ failureThreshold: 3 }) },
    instanceId: "one-instance",
  });
  const workers = [0, 1].map(() =>
    new Worker(new URL("./_mirror_worker.ts", import.meta.url).href, { type: "module" })
  );
  const seen: Seen[][] = [[], []];
  const host = createBreakerHost({
    breaker: () => real,
    postTo: (index, message) => workers[index].postMessage(message),
    broadcast: (message) => workers.forEach((worker) => worker.postMessage(message)),
  });
  try {
    workers.forEach((worker, index) => {
      worker.onmessage = (event: MessageEvent<FromWorker | Seen>) => {
        if (event.data.type === "seen") seen[index].push(event.data);
        else host.handle(index, event.data);
      };
      worker.postMessage(host.snapshot() satisfies ToWorker);
    });
    // `deno test` type-checks a worker's modules when it starts them: seconds on a busy machine.
    await waitFor(() => seen.every((list) => list.length > 0), {
      timeoutMs: 30_000,
      what: "both workers loaded and got the snapshot",
    });
    const samples: number[] = [];
    for (let round = 0; round < 15; round++) {
      const before = seen[1].length;
      // Three failures at worker 0, the third trips; worker 1 must refuse right after.
      for (let failure = 0; failure < 3; failure++) workers[0].postMessage({ type: "fail" });
      const sentAtMs = performance.timeOrigin + performance.now();
      await waitFor(() => seen[1].slice(before).some((entry) => entry.state === "open"), {
        timeoutMs: 2000,
        what: `worker 1 saw trip ${round}`,
      });
      const opened = seen[1].slice(before).find((entry) => entry.state === "open")!;
      assert.equal(opened.admitted, false, "worker 1 refuses from that publication on");
      samples.push(opened.atMs - sentAtMs);
      await real.force("users", "reset");
      await waitFor(() => seen[1].at(-1)?.state === "closed", { what: "reset reached worker 1" });
    }
    samples.sort((a, b) => a - b);
    const median = samples[Math.floor(samples.length / 2)];
    // From this thread's post of three failures to worker 1's copy of the trip: three thread
    // hops and the real breaker's record, bounded generously for a loaded machine.
    console.log(
      `trip at worker 0 reached worker 1: median ${median.toFixed(2)} ms, ` +
        `max ${samples.at(-1)!.toFixed(2)} ms (${samples.length} trips)`,
    );
    assert.ok(median < 50, `median ${median} ms`);
  } finally {
    for (const worker of workers) worker.postMessage({ type: "stop" });
    host.close();
    await within(real.close(), 2000, "breaker closed");
    // A stopped worker closes itself; terminate covers one that did not get there.
    await new Promise((resolve) => setTimeout(resolve, 50));
    for (const worker of workers) worker.terminate();
  }
});
