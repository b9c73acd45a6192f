/**
 * Retries end to end: a real gateway in front of real upstreams that fail, reset, hang or
 * answer with Retry-After. Counts what the upstream saw, not what the gateway says it did.
 */
import assert from "node:assert/strict";
import { startTestGateway } from "../_helpers/gateway.ts";
import { readRequestHead, startRawUpstream, startUpstream } from "../_helpers/upstream.ts";
import { seededRandom } from "../_helpers/process.ts";
import { bounded, closeAll } from "../_helpers/wait.ts";

/** Runs `count` requests, `concurrency` at a time; returns their statuses. */
async function load(
  count: number,
  concurrency: number,
  send: (index: number) => Promise<Response>,
): Promise<number[]> {
  const statuses: number[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < count) {
      const response = await send(next++);
      await response.body?.cancel();
      statuses.push(response.status);
    }
  }));
  return statuses;
}

const FAST_RETRY = { baseDelayMs: 1, maxDelayMs: 5 };

/** What a 30%-failing upstream behind `attempts: 2` costs with retry budget `budgetPercent`. */
async function flakyRun(budgetPercent: number, count: number) {
  const random = seededRandom(42);
  const upstream = startUpstream(() =>
    random() < 0.3 ? new Response("flaky", { status: 503 }) : new Response("ok")
  );
  const gw = await startTestGateway({
    services: {
      flaky: {
        prefix: "/flaky",
        upstreams: [upstream.origin],
        // ~2.7% of requests still fail after retries: more than the default 5 in 10 s.
        breaker: { failureThreshold: 100000 },
        retry: { attempts: 2, budgetPercent, minRetriesPerSecond: 1, ...FAST_RETRY },
      },
    },
  });
  try {
    const statuses = await load(count, 8, () => fetch(`${gw.url}/flaky/item`, bounded()));
    const successRate = statuses.filter((status) => status === 200).length / count;
    const extra = upstream.requests.length - count;
    console.log(
      `budget ${budgetPercent}%: success rate ${successRate}; ` +
        `upstream saw ${upstream.requests.length} for ${count} requests`,
    );
    return { successRate, extra };
  } finally {
    await closeAll({ gw, upstream });
  }
}

/** Retrying every failure of a 30%-failing upstream twice costs 0.3 + 0.3^2 extra per request. */
const UNBUDGETED_EXTRA_PER_REQUEST = 0.3 + 0.09;

Deno.test("a 30%-failing upstream behind 2 retries, budget to spare: success near 1 - 0.3^3", async () => {
  const count = 400;
  const { successRate, extra } = await flakyRun(50, count);
  const expected = 1 - 0.3 ** 3; // 0.973
  assert.ok(
    Math.abs(successRate - expected) < 0.03,
    `success rate ${successRate}, expected about ${expected}`,
  );
  // A 50% budget does not bind: every failure was retried (about 156 extra for 400).
  const unbudgeted = count * UNBUDGETED_EXTRA_PER_REQUEST;
  assert.ok(Math.abs(extra - unbudgeted) < 40, `extra ${extra}, expected about ${unbudgeted}`);
});

Deno.test("a 30%-failing upstream behind a 20% retry budget: extra load within budget, below retrying every failure", async () => {
  const count = 400;
  const { successRate, extra } = await flakyRun(20, count);
  // The budget: 20% of requests plus minRetriesPerSecond over the 10 s window (1 x 10).
  const budget = count * 0.2 + 10; // 90
  const unbudgeted = count * UNBUDGETED_EXTRA_PER_REQUEST; // ~156: what no budget at all costs
  assert.ok(budget < unbudgeted - 40, "the bound sits below what no budget produces");
  assert.ok(extra <= budget, `extra load ${extra} within the budget ${budget}`);
  assert.ok(extra >= budget - 15, `the budget was used: ${extra}`);
  // Retries still helped, but some failures went unretried.
  assert.ok(successRate > 0.7 + 0.05, `success rate ${successRate}`);
  assert.ok(successRate < 1 - 0.3 ** 3 - 0.03, `success rate ${successRate}`);
});

Deno.test("a full outage is not multiplied: retries stop at the 20% budget", async () => {
  const upstream = startUpstream(() => new Response("down", { status: 503 }));
  const gw = await startTestGateway({
    services: {
      down: {
        prefix: "/down",
        upstreams: [upstream.origin],
        breaker: { failureThreshold: 100000 },
        retry: { attempts: 3, minRetriesPerSecond: 1, ...FAST_RETRY },
      },
    },
  });
  try {
    const count = 200;
    const statuses = await load(count, 8, () => fetch(`${gw.url}/down/x`, bounded()));
    assert.ok(statuses.every((status) => status === 503));
    const extra = upstream.requests.length - count;
    // Without a budget this would be 3 x 200 = 600 extra requests.
    assert.ok(extra <= count * 0.2 + 10, `extra load ${extra} within 20% + floor`);
    assert.ok(extra >= count * 0.2 - 5, `the budget was used: ${extra}`);
  } finally {
    await closeAll({ gw, upstream });
  }
});

Deno.test("a retry goes to another upstream of the service", async () => {
  const bad = startUpstream(() => new Response("bad", { status: 502 }));
  const good = startUpstream(() => new Response("good"));
  const gw = await startTestGateway({
    services: {
      two: {
        prefix: "/two",
        upstreams: [bad.origin, good.origin],
        retry: { attempts: 1, ...FAST_RETRY },
        // Every attempt counts for the breaker; keep it out of this test's way.
        breaker: { failureThreshold: 100 },
      },
    },
  });
  try {
    for (let i = 0; i < 10; i++) {
      const response = await fetch(`${gw.url}/two/x`, bounded());
      assert.equal(await response.text(), "good");
    }
    assert.ok(bad.requests.length >= 1 && bad.requests.length <= 10);
  } finally {
    await closeAll({ gw, bad, good });
  }
});

Deno.test("connections reset before any response byte are retried", async () => {
  const upstream = startRawUpstream(async (conn) => {
    const head = await readRequestHead(conn);
    if (upstream.accepted() <= 2 || head.startsWith("POST")) return; // closed without a byte
    await conn.write(
      new TextEncoder().encode(
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
      ),
    );
  });
  const gw = await startTestGateway({
    services: {
      resets: { prefix: "/r", upstreams: [upstream.origin], retry: { attempts: 2, ...FAST_RETRY } },
    },
  });
  try {
    const response = await fetch(`${gw.url}/r/x`, bounded());
    assert.equal(response.status, 200);
    assert.equal(await response.text(), "ok");
    assert.equal(upstream.accepted(), 3);

    // A POST without Idempotency-Key meets a reset: the upstream may have acted on it, so no retry.
    const post = await fetch(`${gw.url}/r/x`, bounded({ method: "POST", body: "once" }));
    assert.equal(post.status, 502);
    assert.equal(post.headers.get("x-breakwater-error"), "upstream_unreachable");
    await post.body?.cancel();
    assert.equal(upstream.accepted(), 4);
  } finally {
    await closeAll({ gw, upstream });
  }
});

Deno.test("a response whose body has started is never retried", async () => {
  const upstream = startRawUpstream(async (conn) => {
    await readRequestHead(conn);
    await conn.write(
      new TextEncoder().encode(
        "HTTP/1.1 200 OK\r\ncontent-length: 100\r\nconnection: close\r\n\r\npartial",
      ),
    );
    // ...and the connection dies mid-body.
  });
  const gw = await startTestGateway({
    services: {
      cut: { prefix: "/c", upstreams: [upstream.origin], retry: { attempts: 3, ...FAST_RETRY } },
    },
  });
  try {
    const response = await fetch(`${gw.url}/c/x`, bounded());
    assert.equal(response.status, 200);
    await assert.rejects(() => response.text());
    assert.equal(upstream.accepted(), 1);
  } finally {
    await closeAll({ gw, upstream });
  }
});

Deno.test("a hanging upstream is cut off at timeoutMs, with no retry past the deadline", async () => {
  const upstream = startRawUpstream(async (conn) => {
    await readRequestHead(conn);
    const buffer = new Uint8Array(1024);
    while ((await conn.read(buffer)) !== null) {
      // hang: never answer; ends when the gateway gives up and closes
    }
  });
  const gw = await startTestGateway({
    services: {
      hang: {
        prefix: "/h",
        upstreams: [upstream.origin],
        timeoutMs: 300,
        retry: { attempts: 3, ...FAST_RETRY },
      },
    },
  });
  try {
    const started = performance.now();
    const response = await fetch(`${gw.url}/h/x`, bounded());
    const elapsedMs = performance.now() - started;
    assert.equal(response.status, 504);
    assert.equal(response.headers.get("x-breakwater-error"), "upstream_timeout");
    await response.body?.cancel();
    assert.ok(elapsedMs >= 290 && elapsedMs < 600, `cut off after ${elapsedMs} ms`);
    // Nothing to wait for: a retry that must not happen gets a moment to show up (the backoff
    // here is at most 5 ms).
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(upstream.accepted(), 1, "no retry after the deadline");
  } finally {
    await closeAll({ gw, upstream });
  }
});

Deno.test("Retry-After is honoured, and a wait past the deadline means no retry", async () => {
  let calls = 0;
  const upstream = startUpstream((request) => {
    calls++;
    const wait = new URL(request.url).searchParams.get("wait")!;
    return calls % 2 === 1
      ? new Response("later", { status: 503, headers: { "retry-after": wait } })
      : new Response("ok");
  });
  const gw = await startTestGateway({
    services: {
      ra: {
        prefix: "/ra",
        upstreams: [upstream.origin],
        timeoutMs: 2500,
        retry: { attempts: 2, ...FAST_RETRY },
      },
    },
  });
  try {
    let started = performance.now();
    const waited = await fetch(`${gw.url}/ra/x?wait=1`, bounded());
    assert.equal(waited.status, 200);
    await waited.body?.cancel();
    const waitedMs = performance.now() - started;
    assert.ok(waitedMs >= 990 && waitedMs < 1800, `retried after Retry-After: ${waitedMs} ms`);
    assert.equal(calls, 2);

    started = performance.now();
    const refused = await fetch(`${gw.url}/ra/x?wait=10`, bounded());
    assert.equal(refused.status, 503);
    assert.equal(await refused.text(), "later");
    assert.ok(performance.now() - started < 500, "answered at once, not after the deadline");
    assert.equal(calls, 3);
  } finally {
    await closeAll({ gw, upstream });
  }
});

Deno.test("a POST is never sent twice without Idempotency-Key; with one it is retried", async () => {
  const bodies: string[] = [];
  const upstream = startUpstream(async (request) => {
    bodies.push(`${request.headers.get("idempotency-key") ?? "-"}:${await request.text()}`);
    return new Response("unavailable", { status: 503 });
  });
  const gw = await startTestGateway({
    services: {
      orders: {
        prefix: "/orders",
        upstreams: [upstream.origin],
        retry: { attempts: 3, ...FAST_RETRY },
      },
    },
  });
  try {
    const plain = await fetch(`${gw.url}/orders`, bounded({ method: "POST", body: "order-1" }));
    assert.equal(plain.status, 503);
    await plain.body?.cancel();
    assert.deepEqual(bodies, ["-:order-1"]);

    const keyed = await fetch(
      `${gw.url}/orders`,
      bounded({
        method: "POST",
        headers: { "idempotency-key": "k-2" },
        body: "order-2",
      }),
    );
    assert.equal(keyed.status, 503);
    await keyed.body?.cancel();
    assert.deepEqual(bodies.slice(1), ["k-2:order-2", "k-2:order-2", "k-2:order-2", "k-2:order-2"]);
  } finally {
    await closeAll({ gw, upstream });
  }
});
