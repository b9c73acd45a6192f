/**
 * The request path end to end: a real gateway in front of real upstream servers, driven by a real
 * HTTP client.
 * Shared by the suite files so each upstream client runs the same cases
 * (`forwarding_test.ts` with `fetch`, `http1_e2e_test.ts` with `http1`).
 */
import assert from "node:assert/strict";
import {
  startTestGateway as startGateway,
  type UpstreamClientChoice,
  withUpstreamClient,
} from "../_helpers/gateway.ts";
import { readRequestHead, startRawUpstream, startUpstream } from "../_helpers/upstream.ts";
import { bounded, closeAll, waitFor, within } from "../_helpers/wait.ts";

/** Registers the cases for `client`; test names get a `client: ` prefix except for fetch. */
export function forwardingCases(client: UpstreamClientChoice): void {
  const prefix = client === "fetch" ? "" : `${client}: `;
  const startTestGateway = (
    config: Record<string, unknown>,
    env: Record<string, string | undefined> = {},
  ) => startGateway(withUpstreamClient(config, client), env);

  Deno.test(
    prefix + "forwards method, path, query, headers and body; passes the answer back",
    async () => {
      const upstream = startUpstream(async (request) => {
        const headers = new Headers({ "content-type": "application/json", "x-upstream": "yes" });
        headers.append("set-cookie", "a=1; Path=/");
        headers.append("set-cookie", "b=2; Path=/");
        return new Response(
          JSON.stringify({
            method: request.method,
            url: request.url,
            body: await request.text(),
            headers: Object.fromEntries(request.headers),
          }),
          { status: 201, headers },
        );
      });
      const gw = await startTestGateway({
        services: { users: { prefix: "/api/users", upstreams: [upstream.origin] } },
      });
      try {
        const response = await fetch(
          `${gw.url}/api/users/7?expand=orders&x=%20y`,
          bounded({
            method: "PATCH",
            headers: {
              "content-type": "text/plain",
              "x-custom": "kept",
              "x-request-id": "client-id-123",
              traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
              connection: "x-hop-secret",
              "x-hop-secret": "must not pass",
            },
            body: "hello upstream",
          }),
        );
        const seen = await response.json();
        assert.equal(response.status, 201);
        assert.equal(response.headers.get("x-upstream"), "yes");
        assert.deepEqual(response.headers.getSetCookie(), ["a=1; Path=/", "b=2; Path=/"]);
        assert.equal(response.headers.get("x-request-id"), "client-id-123");
        assert.match(response.headers.get("via") ?? "", /breakwater/);
        assert.equal(seen.method, "PATCH");
        assert.equal(new URL(seen.url).pathname, "/api/users/7");
        assert.equal(new URL(seen.url).search, "?expand=orders&x=%20y");
        assert.equal(seen.body, "hello upstream");
        assert.equal(seen.headers["x-custom"], "kept");
        assert.equal(seen.headers["x-request-id"], "client-id-123");
        assert.equal(seen.headers["x-forwarded-for"], "127.0.0.1");
        assert.equal(seen.headers["x-forwarded-proto"], "http");
        assert.equal(seen.headers["x-forwarded-host"], `127.0.0.1:${gw.port}`);
        assert.equal(seen.headers["via"], "1.1 breakwater");
        assert.equal(
          seen.headers["traceparent"],
          "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        assert.equal(seen.headers["x-hop-secret"], undefined);
        assert.equal(new URL(seen.url).host, new URL(upstream.origin).host);
      } finally {
        await closeAll({ gw, upstream });
      }
    },
  );

  Deno.test(prefix + "an invalid client request id is replaced by a generated one", async () => {
    const upstream = startUpstream((request) => new Response(request.headers.get("x-request-id")));
    const gw = await startTestGateway({
      services: { s: { prefix: "/s", upstreams: [upstream.origin] } },
    });
    try {
      const response = await fetch(
        `${gw.url}/s`,
        bounded({ headers: { "x-request-id": "bad id; drop" } }),
      );
      const sentUpstream = await response.text();
      assert.match(sentUpstream, /^[0-9a-f-]{36}$/);
      assert.equal(response.headers.get("x-request-id"), sentUpstream);
    } finally {
      await closeAll({ gw, upstream });
    }
  });

  Deno.test(
    prefix + "stripPrefix removes the prefix; longest prefix wins; no match is 404 no_route",
    async () => {
      const a = startUpstream((request) => new Response(`a ${new URL(request.url).pathname}`));
      const b = startUpstream((request) => new Response(`b ${new URL(request.url).pathname}`));
      const gw = await startTestGateway({
        services: {
          api: { prefix: "/api", upstreams: [a.origin] },
          users: { prefix: "/api/users", upstreams: [b.origin], stripPrefix: true },
        },
      });
      try {
        const text = async (path: string) => (await fetch(gw.url + path, bounded())).text();
        assert.equal(await text("/api/users/7"), "b /7");
        assert.equal(await text("/api/users"), "b /");
        assert.equal(await text("/api/usersX"), "a /api/usersX");
        assert.equal(await text("/api/other"), "a /api/other");
        const missing = await fetch(`${gw.url}/nothing/here`, bounded());
        assert.equal(missing.status, 404);
        assert.equal(missing.headers.get("content-type"), "application/problem+json");
        assert.equal(missing.headers.get("x-breakwater-error"), "no_route");
        const problem = await missing.json();
        assert.equal(problem.status, 404);
        assert.equal(problem.code, "no_route");
      } finally {
        await closeAll({ gw, a, b });
      }
    },
  );

  Deno.test(prefix + "keep-alive: 50 sequential requests use one upstream connection", async () => {
    const upstream = startUpstream(() => new Response("ok"));
    const gw = await startTestGateway({
      services: { s: { prefix: "/s", upstreams: [upstream.origin] } },
    });
    try {
      for (let i = 0; i < 50; i++) {
        const response = await fetch(`${gw.url}/s/${i}`, bounded());
        assert.equal(await response.text(), "ok");
      }
      assert.equal(upstream.requests.length, 50);
      assert.equal(upstream.connections(), 1);
    } finally {
      await closeAll({ gw, upstream });
    }
  });

  Deno.test(prefix + "requests are spread across a service's upstreams", async () => {
    const one = startUpstream(() => new Response("1"));
    const two = startUpstream(() => new Response("2"));
    const gw = await startTestGateway({
      services: { s: { prefix: "/s", upstreams: [one.origin, two.origin] } },
    });
    try {
      for (let i = 0; i < 20; i++) await (await fetch(`${gw.url}/s`, bounded())).text();
      assert.equal(one.requests.length + two.requests.length, 20);
      assert.ok(one.requests.length >= 5 && two.requests.length >= 5);
    } finally {
      await closeAll({ gw, one, two });
    }
  });

  Deno.test(prefix + "connection refused -> 502 upstream_unreachable", async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const deadPort = (listener.addr as Deno.NetAddr).port;
    listener.close();
    const gw = await startTestGateway({
      services: { s: { prefix: "/s", upstreams: [`http://127.0.0.1:${deadPort}`] } },
    });
    try {
      const response = await fetch(`${gw.url}/s`, bounded());
      assert.equal(response.status, 502);
      assert.equal(response.headers.get("x-breakwater-error"), "upstream_unreachable");
      assert.equal((await response.json()).service, "s");
    } finally {
      await closeAll({ gw });
    }
  });

  Deno.test(
    prefix + "an upstream that never answers -> 504 upstream_timeout at timeoutMs",
    async () => {
      const hung = startRawUpstream(async (conn) => {
        await readRequestHead(conn);
        await conn.read(new Uint8Array(1)); // wait until the gateway gives up and closes
      });
      const gw = await startTestGateway({
        services: { s: { prefix: "/s", upstreams: [hung.origin], timeoutMs: 300 } },
      });
      try {
        const started = performance.now();
        const response = await fetch(`${gw.url}/s`, bounded());
        const elapsedMs = performance.now() - started;
        assert.equal(response.status, 504);
        assert.equal(response.headers.get("x-breakwater-error"), "upstream_timeout");
        await response.body?.cancel();
        assert.ok(elapsedMs >= 280 && elapsedMs < 2000, `took ${elapsedMs} ms`);
      } finally {
        await closeAll({ gw, hung });
      }
    },
  );

  Deno.test(
    prefix + "an upstream that resets mid-body: the client sees a cut body, the gateway goes on",
    async () => {
      const resetter = startRawUpstream(async (conn) => {
        await readRequestHead(conn);
        await conn.write(
          new TextEncoder().encode(
            "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\ncontent-type: text/plain\r\n\r\npartial",
          ),
        );
        conn.close();
      });
      const healthy = startUpstream(() => new Response("fine"));
      const gw = await startTestGateway({
        services: {
          broken: { prefix: "/broken", upstreams: [resetter.origin] },
          ok: { prefix: "/ok", upstreams: [healthy.origin] },
        },
      });
      try {
        const response = await fetch(`${gw.url}/broken`, bounded());
        assert.equal(response.status, 200);
        await assert.rejects(response.text());
        const next = await fetch(`${gw.url}/ok`, bounded());
        assert.equal(await next.text(), "fine");
        assert.equal(gw.gateway.poolUsage().broken.active, 0);
      } finally {
        await closeAll({ gw, resetter, healthy });
      }
    },
  );

  Deno.test(
    prefix +
      "bodies over limits.maxBodyBytes -> 413, declared or chunked; nothing reaches upstream",
    async () => {
      const upstream = startUpstream(async (request) =>
        new Response(String((await request.arrayBuffer()).byteLength))
      );
      const gw = await startTestGateway({
        limits: { maxBodyBytes: 1024 },
        services: { s: { prefix: "/s", upstreams: [upstream.origin] } },
      });
      try {
        const declared = await fetch(
          `${gw.url}/s`,
          bounded({ method: "POST", body: new Uint8Array(2048) }),
        );
        assert.equal(declared.status, 413);
        assert.equal(declared.headers.get("x-breakwater-error"), "body_too_large");
        await declared.body?.cancel();
        assert.equal(upstream.requests.length, 0);

        const chunks = [new Uint8Array(600), new Uint8Array(600)];
        const chunked = await fetch(
          `${gw.url}/s`,
          bounded({
            method: "POST",
            body: new ReadableStream({
              pull(controller) {
                const next = chunks.shift();
                if (next) controller.enqueue(next);
                else controller.close();
              },
            }),
          }),
        );
        assert.equal(chunked.status, 413);
        assert.equal(chunked.headers.get("x-breakwater-error"), "body_too_large");
        await chunked.body?.cancel();

        const fits = await fetch(
          `${gw.url}/s`,
          bounded({ method: "POST", body: new Uint8Array(1024) }),
        );
        assert.equal(await fits.text(), "1024");
        // The breaker did not count the client's oversize bodies against the upstream.
        assert.equal(gw.gateway.breaker.view("s").failuresInWindow, 0);
      } finally {
        await closeAll({ gw, upstream });
      }
    },
  );

  Deno.test(prefix + "pool saturation answers 503 pool_saturated at once", async () => {
    let releaseUpstream: () => void = () => {};
    const gate = new Promise<void>((resolve) => releaseUpstream = resolve);
    const upstream = startUpstream(async () => {
      await gate;
      return new Response("done");
    });
    const gw = await startTestGateway({
      services: {
        s: {
          prefix: "/s",
          upstreams: [upstream.origin],
          pool: { maxConnections: 1, maxPending: 1, queueTimeoutMs: 5000 },
        },
      },
    });
    try {
      const first = fetch(`${gw.url}/s/1`, bounded());
      first.catch(() => {}); // awaited below: a timeout fails this test, not the whole file
      await waitFor(() => upstream.requests.length >= 1, { what: "the first request upstream" });
      const queued = fetch(`${gw.url}/s/2`, bounded());
      queued.catch(() => {});
      await waitFor(() => gw.gateway.poolUsage().s.pending >= 1, { what: "a queued waiter" });
      const started = performance.now();
      const rejected = await fetch(`${gw.url}/s/3`, bounded());
      assert.ok(performance.now() - started < 500);
      assert.equal(rejected.status, 503);
      assert.equal(rejected.headers.get("x-breakwater-error"), "pool_saturated");
      await rejected.body?.cancel();
      releaseUpstream();
      assert.equal(await (await within(first, 5000, "the first answer")).text(), "done");
      assert.equal(await (await within(queued, 5000, "the queued answer")).text(), "done");
      assert.equal(gw.gateway.poolUsage().s.active, 0);
    } finally {
      releaseUpstream();
      await closeAll({ gw, upstream });
    }
  });

  Deno.test(prefix + "a waiter that waits queueTimeoutMs gets 503 pool_saturated", async () => {
    let releaseUpstream: () => void = () => {};
    const gate = new Promise<void>((resolve) => releaseUpstream = resolve);
    const upstream = startUpstream(async () => {
      await gate;
      return new Response("done");
    });
    const gw = await startTestGateway({
      services: {
        s: {
          prefix: "/s",
          upstreams: [upstream.origin],
          pool: { maxConnections: 1, maxPending: 10, queueTimeoutMs: 100 },
        },
      },
    });
    try {
      const first = fetch(`${gw.url}/s/1`, bounded());
      first.catch(() => {}); // awaited below: a timeout fails this test, not the whole file
      await waitFor(() => upstream.requests.length >= 1, { what: "the first request upstream" });
      const waited = await fetch(`${gw.url}/s/2`, bounded());
      assert.equal(waited.status, 503);
      assert.equal(waited.headers.get("x-breakwater-error"), "pool_saturated");
      await waited.body?.cancel();
      releaseUpstream();
      await (await within(first, 5000, "the first answer")).text();
    } finally {
      releaseUpstream();
      await closeAll({ gw, upstream });
    }
  });

  Deno.test(prefix + "a client that goes away cancels the upstream request", async () => {
    let upstreamAborted: () => void = () => {};
    const aborted = new Promise<void>((resolve) => upstreamAborted = resolve);
    const upstream = startUpstream((request) =>
      // Never answers by itself; ends only when the gateway drops the connection.
      new Promise<Response>((resolve) => {
        request.signal.addEventListener("abort", () => {
          upstreamAborted();
          resolve(new Response("too late"));
        });
      })
    );
    const gw = await startTestGateway({
      services: { s: { prefix: "/s", upstreams: [upstream.origin], timeoutMs: 60_000 } },
    });
    try {
      const controller = new AbortController();
      const pending = fetch(`${gw.url}/s`, bounded({ signal: controller.signal })).catch(() =>
        null
      );
      await waitFor(() => upstream.requests.length >= 1, { what: "the request upstream" });
      controller.abort();
      await within(pending, 3000, "the client's aborted fetch to settle");
      await within(aborted, 3000, "the upstream request to be aborted");
      await waitFor(() => gw.gateway.poolUsage().s.active === 0, { what: "the pool to be idle" });
      assert.equal(gw.gateway.breaker.view("s").failuresInWindow, 0);
    } finally {
      await closeAll({ gw, upstream });
    }
  });

  Deno.test(prefix + "healthz and readyz", async () => {
    const upstream = startUpstream(() => new Response("ok"));
    const gw = await startTestGateway({
      services: { s: { prefix: "/s", upstreams: [upstream.origin] } },
    });
    try {
      const health = await fetch(`${gw.url}/healthz`, bounded());
      assert.equal(health.status, 200);
      await health.body?.cancel();
      const ready = await fetch(`${gw.url}/readyz`, bounded());
      assert.equal(ready.status, 200);
      const body = await ready.json();
      assert.equal(body.status, "ready");
      assert.equal(body.services.s.breaker, "closed");
      assert.deepEqual(body.services.s.pool, { active: 0, pending: 0, max: 20 });
      gw.gateway.drain();
      const draining = await fetch(`${gw.url}/readyz`, bounded());
      assert.equal(draining.status, 503);
      assert.equal((await draining.json()).status, "draining");
      const refused = await fetch(`${gw.url}/s`, bounded());
      assert.equal(refused.status, 503);
      assert.equal(refused.headers.get("x-breakwater-error"), "draining");
      await refused.body?.cancel();
      const stillHealthy = await fetch(`${gw.url}/healthz`, bounded());
      assert.equal(stillHealthy.status, 200);
      await stillHealthy.body?.cancel();
    } finally {
      await closeAll({ gw, upstream });
    }
  });

  Deno.test(
    prefix +
      "an upstream that hangs without reading the body is the upstream's timeout, not the client's",
    async () => {
      const hung = startRawUpstream(async (conn) => {
        await readRequestHead(conn); // never reads the body, never answers
        await conn.read(new Uint8Array(1));
      });
      const gw = await startTestGateway({
        services: {
          s: {
            prefix: "/s",
            upstreams: [hung.origin],
            timeoutMs: 300,
            breaker: { failureThreshold: 2 },
          },
        },
      });
      try {
        for (let i = 0; i < 2; i++) {
          const response = await fetch(
            `${gw.url}/s`,
            bounded({ method: "POST", body: "x".repeat(100) }),
          );
          assert.equal(response.status, 504);
          assert.equal(response.headers.get("x-breakwater-error"), "upstream_timeout");
          await response.body?.cancel();
        }
        assert.equal(gw.gateway.breaker.view("s").state, "open");
      } finally {
        await closeAll({ gw, hung });
      }
    },
  );
}
