/**
 * One real gateway worker (`src/workers/worker_main.ts` in a Web Worker), driven as
 * `src/workers/run.ts` drives it: a reload that arrives while the worker is still starting
 * (its `start` message carried the config of before) is the config it serves with.
 */
import assert from "node:assert/strict";
import { createFleetBreaker } from "../../src/breaker/fleet.ts";
import { parseConfig } from "../../src/config/schema.ts";
import { createBreakerHost } from "../../src/workers/breaker_host.ts";
import type { FromWorker, ToWorker } from "../../src/workers/protocol.ts";
import { startUpstream } from "../_helpers/upstream.ts";
import { closeAll, waitFor, within } from "../_helpers/wait.ts";

Deno.test("a reload sent while a worker starts is the config it serves with", async () => {
  const upstream = startUpstream(() => new Response("from upstream"));
  const configFor = (prefix: string) =>
    parseConfig({
      listen: { hostname: "127.0.0.1", port: 0 },
      kv: { path: ":memory:" },
      services: {
        a: { prefix, upstreams: [upstream.origin], healthCheck: null },
      },
    });
  const started = configFor("/old");
  const breaker = createFleetBreaker({
    kv: null,
    services: { a: started.services.a.breaker },
    instanceId: "worker-start-test",
  });
  const worker = new Worker(new URL("../../src/workers/worker_main.ts", import.meta.url).href, {
    type: "module",
  });
  const post = (message: ToWorker) => worker.postMessage(message);
  const host = createBreakerHost({
    breaker: () => breaker,
    postTo: (_, m) => post(m),
    broadcast: post,
  });
  const received: FromWorker[] = [];
  worker.onmessage = (event: MessageEvent<FromWorker>) => {
    if (!host.handle(0, event.data)) received.push(event.data);
  };
  let drained = false;
  try {
    post({
      type: "start",
      index: 0,
      instanceId: "worker-start-test",
      config: started,
      port: 0,
      env: { BREAKWATER_LOG_LEVEL: "off" },
      testHooks: false,
    });
    post(host.snapshot());
    // Right behind `start`: the worker is still loading the gateway when it reads this.
    post({ type: "reload", config: configFor("/new") });
    // `deno test` type-checks a worker's modules when it starts it: seconds on a busy machine.
    await waitFor(() => received.some((message) => message.type === "listening"), {
      timeoutMs: 30_000,
      what: "the worker listening",
    });
    const listening = received.find((message) => message.type === "listening") as
      & FromWorker
      & { type: "listening" };
    const status = async (path: string) => {
      const response = await fetch(`http://127.0.0.1:${listening.port}${path}`, {
        signal: AbortSignal.timeout(5000),
      });
      await response.body?.cancel();
      return response.status;
    };
    assert.equal(await status("/new/x"), 200, "the reloaded prefix routes");
    assert.equal(await status("/old/x"), 404, "the start message's prefix is gone");

    post({ type: "drain", drainDelayMs: 0, timeoutMs: 2000 });
    await waitFor(() => received.some((message) => message.type === "drained"), {
      what: "the worker drained",
    });
    drained = true;
  } finally {
    if (!drained) post({ type: "drain", drainDelayMs: 0, timeoutMs: 500 });
    worker.terminate();
    host.close();
    await within(breaker.close(), 2000, "breaker closed");
    await closeAll({ upstream });
  }
});
