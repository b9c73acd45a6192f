/**
 * `Gateway.reload` in process: an unchanged service keeps its pool (the upstream sees one
 * connection across the reload), a changed one gets a new runtime, metrics and the pool usage
 * follow the config in force.
 *
 * @module
 */
import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/schema.ts";
import { startTestGateway } from "../_helpers/gateway.ts";
import { startUpstream } from "../_helpers/upstream.ts";
import { bounded, waitFor } from "../_helpers/wait.ts";

Deno.test("reload in process: unchanged service keeps its pooled connection; added service routed", async () => {
  const upstream = startUpstream(() => new Response("ok"));
  const raw = {
    kv: { path: ":memory:" },
    services: { a: { prefix: "/a", upstreams: [upstream.origin], upstreamClient: "http1" } },
  };
  try {
    await using gw = await startTestGateway(raw);
    const get = async (path: string) => {
      const response = await fetch(`${gw.url}${path}`, bounded());
      await response.body?.cancel();
      return response.status;
    };
    assert.equal(await get("/a/1"), 200);
    assert.equal(upstream.connections(), 1);
    const result = await gw.gateway.reload(parseConfig({
      ...raw,
      services: {
        ...raw.services,
        b: { prefix: "/b", upstreams: [upstream.origin], upstreamClient: "http1" },
      },
    }));
    assert.deepEqual(result, { ok: true, added: ["b"], removed: [], changed: [], ignored: [] });
    assert.equal(await get("/a/2"), 200);
    // The same pooled connection: a's runtime and client carried over.
    assert.equal(upstream.connections(), 1);
    assert.equal(await get("/b/1"), 200);
    assert.deepEqual(Object.keys(gw.gateway.poolUsage()), ["a", "b"]);
    assert.deepEqual(Object.keys(gw.gateway.config.services), ["a", "b"]);
    assert.equal(gw.gateway.inFlight(), 0);
  } finally {
    await upstream.close();
  }
});

Deno.test("reload in process: a removed service's response body still streaming finishes whole", async () => {
  let release: () => void = () => {};
  const gate = new Promise<void>((resolve) => release = resolve);
  const upstream = startUpstream(() => {
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        controller.enqueue(new TextEncoder().encode("first,"));
        await gate;
        controller.enqueue(new TextEncoder().encode("last"));
        controller.close();
      },
    });
    return new Response(body);
  });
  const raw = {
    kv: { path: ":memory:" },
    services: {
      gone: { prefix: "/gone", upstreams: [upstream.origin], upstreamClient: "http1" },
      kept: { prefix: "/kept", upstreams: [upstream.origin] },
    },
  };
  try {
    await using gw = await startTestGateway(raw);
    const response = await fetch(`${gw.url}/gone/stream`, bounded());
    assert.equal(response.status, 200);
    const reader = response.body!.getReader();
    const first = await reader.read();
    assert.equal(new TextDecoder().decode(first.value), "first,");

    const result = await gw.gateway.reload(parseConfig({
      ...raw,
      services: { kept: raw.services.kept },
    }));
    assert.deepEqual(result.removed, ["gone"]);
    const notFound = await fetch(`${gw.url}/gone/stream`, bounded());
    assert.equal(notFound.status, 404);
    await notFound.body?.cancel();

    // The old generation waits for the body: nothing of it is closed yet.
    const retired = () => gw.logs.some((line) => line.msg === "previous config retired");
    await new Promise((resolve) => setTimeout(resolve, 150)); // three retirement polls
    assert.equal(retired(), false);
    release();
    let rest = "";
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
      rest += new TextDecoder().decode(chunk.value);
    }
    assert.equal(rest, "last");
    await waitFor(retired, { what: "previous config retired" });
  } finally {
    release();
    await upstream.close();
  }
});
