/**
 * `Gateway.reload` in process: an unchanged service keeps its pool (the upstream sees one
 * connection across the reload), a changed one gets a new runtime, metrics and the pool usage
 * follow the config in force; the fleet retry budget follows a new breaker with its counts.
 * Breaker audit entries reach the log.
 *
 * @module
 */
import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/schema.ts";
import { retryCountKey } from "../../src/retry/mod.ts";
import { startTestGateway, type TestGateway } from "../_helpers/gateway.ts";
import { startUpstream } from "../_helpers/upstream.ts";
import { bounded, waitFor } from "../_helpers/wait.ts";
import { tempKvPath } from "../breaker/_helpers.ts";

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

/** Each instance's requests in the window as published for the fleet retry budget. */
async function publishedRequests(kv: Deno.Kv, service: string): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for await (const entry of kv.list<[number, number]>({ prefix: retryCountPrefix(service) })) {
    const instanceId = String(entry.key[4]);
    counts.set(instanceId, (counts.get(instanceId) ?? 0) + entry.value[0]);
  }
  return counts;
}

function retryCountPrefix(service: string): Deno.KvKey {
  return retryCountKey(service, 0, "").slice(0, 3);
}

Deno.test("reload in process: the fleet retry budget follows a new breaker and keeps its counts; one floor for two gateways", async () => {
  const file = await tempKvPath();
  let storm = false;
  let stormRequests = 0;
  const upstream = startUpstream(() => {
    if (!storm) return new Response("ok");
    stormRequests++;
    return new Response("down", { status: 503 });
  });
  const api = {
    prefix: "/api",
    upstreams: [upstream.origin],
    // No percentage: only the floor, 2/s over the 10 s window = 20 retries for the whole fleet
    // (per instance it would be 20 each). 503 is retried but is not a breaker failure here.
    retry: { attempts: 1, budgetPercent: 0, minRetriesPerSecond: 2, baseDelayMs: 0, maxDelayMs: 0 },
    breaker: { failureStatuses: "500" },
  };
  const raw = { kv: { path: file.path, syncIntervalMs: 50 }, services: { api } };
  const observer = await Deno.openKv(file.path);
  try {
    await using a = await startTestGateway(raw);
    await using b = await startTestGateway(raw);
    const gateways = [a, b];
    const send = async (gw: TestGateway, count: number, concurrency = 1) => {
      const statuses: number[] = [];
      const worker = async () => {
        while (statuses.length < count) {
          statuses.push(0);
          const response = await fetch(`${gw.url}/api/x`, bounded());
          await response.body?.cancel();
          statuses[statuses.indexOf(0)] = response.status;
        }
      };
      await Promise.all(Array.from({ length: concurrency }, worker));
      return statuses;
    };
    /** Waits until every gateway has published `total` requests (its exchange ran since). */
    const published = (total: number) =>
      waitFor(async () => {
        const counts = await publishedRequests(observer, "api");
        return counts.size === 2 && [...counts.values()].every((count) => count === total);
      }, { timeoutMs: 8000, intervalMs: 20, what: `both gateways to publish ${total} requests` });

    for (const gw of gateways) await send(gw, 10);
    await published(10);
    // a: a new breaker policy, so a new breaker (the budget moves to it); b: a new retry
    // setting, so a new runtime for api on the old breaker (its budget keeps the counts).
    const breakerBefore = a.gateway.breaker;
    await a.gateway.reload(parseConfig({
      ...raw,
      services: { api: { ...api, breaker: { ...api.breaker, windowMs: 9000 } } },
    }));
    assert.notEqual(a.gateway.breaker, breakerBefore);
    const bBreaker = b.gateway.breaker;
    await b.gateway.reload(parseConfig({
      ...raw,
      services: { api: { ...api, retry: { ...api.retry, maxDelayMs: 1 } } },
    }));
    assert.equal(b.gateway.breaker, bBreaker);
    // Two more exchanges each, through the breakers now in force: counts carried over (11, not
    // 1), and each has read the other's after the reload.
    for (const gw of gateways) await send(gw, 1);
    await published(11);
    for (const gw of gateways) await send(gw, 1);
    await published(12);

    storm = true;
    const [fromA, fromB] = await Promise.all(gateways.map((gw) => send(gw, 20, 4)));
    assert.ok([...fromA, ...fromB].every((status) => status === 503));
    const retries = stormRequests - 40;
    // Per-instance budgets would have let 2 x 20 = 40 through.
    assert.ok(retries >= 16 && retries <= 22, `${retries} retries, one floor is 20`);

    await waitFor(() => a.logs.some((line) => line.msg === "previous config retired"), {
      what: "a's previous config retired",
    });
    for (const gw of gateways) {
      assert.equal(gw.gateway.breaker.degraded(), false);
      // One handle opened for both breakers of a, and never a "kv degraded".
      assert.deepEqual(
        gw.logs.filter((line) => String(line.msg).startsWith("kv ")).map((line) => line.msg),
        ["kv opened"],
      );
    }
  } finally {
    observer.close();
    await upstream.close();
    await file.remove();
  }
});

Deno.test("in process: breaker audit entries are logged as 'breaker audit'", async () => {
  const upstream = startUpstream(() => new Response("ok"));
  try {
    await using gw = await startTestGateway({
      services: { a: { prefix: "/a", upstreams: [upstream.origin] } },
    });
    await gw.gateway.breaker.force("a", "open", { by: "tester" });
    const line = gw.logs.find((each) => each.msg === "breaker audit");
    assert.ok(line !== undefined, "an audit log line");
    assert.equal(line.service, "a");
    assert.equal(line.kind, "force_open");
    assert.equal(line.by, "tester");
    assert.equal(line.fleet, true);
  } finally {
    await upstream.close();
  }
});
