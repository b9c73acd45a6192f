/**
 * Request smuggling and routing escapes, as raw bytes on real sockets: ambiguous framing
 * (Content-Length vs Transfer-Encoding, duplicate lengths), CR/LF/NUL in header names and values,
 * pipelined garbage, `X-Forwarded-Host` spoofing and encoded traversal toward the admin routes.
 * Each request is either rejected by the gateway or reaches the owning upstream as exactly one
 * well-framed request; the upstream (a strict raw parser) never sees a second, smuggled one.
 */
import assert from "node:assert/strict";
import { startTestGateway } from "../_helpers/gateway.ts";
import { responseStatuses, startRecordingUpstream } from "../_helpers/raw_http.ts";
import { sendRaw, startUpstream } from "../_helpers/upstream.ts";

const SMUGGLED = "GET /api/a/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

Deno.test("ambiguous framing and CR/LF/NUL in headers never smuggle a request upstream", async () => {
  const upstream = startRecordingUpstream();
  const other = startRecordingUpstream();
  const gw = await startTestGateway({
    services: {
      a: { prefix: "/api/a", upstreams: [upstream.origin], timeoutMs: 2000 },
      b: { prefix: "/api/b", upstreams: [other.origin], timeoutMs: 2000 },
    },
  });
  try {
    const cases: { name: string; bytes: string }[] = [
      {
        name: "CL then TE",
        bytes: "POST /api/a/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n" +
          "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n" + SMUGGLED,
      },
      {
        name: "TE then CL",
        bytes: "POST /api/a/2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" +
          "Content-Length: 60\r\nConnection: close\r\n\r\n0\r\n\r\n" + SMUGGLED,
      },
      {
        name: "TE obfuscated",
        bytes: "POST /api/a/3 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n" +
          "Transfer-Encoding: xchunked\r\nConnection: close\r\n\r\n0\r\n\r\n" + SMUGGLED,
      },
      {
        name: "TE with space before colon",
        bytes: "POST /api/a/4 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n" +
          "Transfer-Encoding : chunked\r\nConnection: close\r\n\r\n0\r\n\r\n" + SMUGGLED,
      },
      {
        name: "duplicate differing Content-Length",
        bytes: "POST /api/a/5 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 44\r\n" +
          "Connection: close\r\n\r\nhello" + SMUGGLED,
      },
      {
        name: "Content-Length list",
        bytes: "POST /api/a/6 HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 44\r\n" +
          "Connection: close\r\n\r\nhello" + SMUGGLED,
      },
      {
        name: "negative Content-Length",
        bytes: "POST /api/a/7 HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n" +
          "Connection: close\r\n\r\n" + SMUGGLED,
      },
      {
        name: "bare LF inside a header value",
        bytes: "GET /api/a/8 HTTP/1.1\r\nHost: x\r\nX-Evil: a\nTransfer-Encoding: chunked\r\n" +
          "Connection: close\r\n\r\n0\r\n\r\n" + SMUGGLED,
      },
      {
        name: "bare CR inside a header value",
        bytes: "GET /api/a/9 HTTP/1.1\r\nHost: x\r\nX-Evil: a\rGET /api/b/x HTTP/1.1\r\n" +
          "Connection: close\r\n\r\n",
      },
      {
        name: "NUL in a header value",
        bytes: "GET /api/a/10 HTTP/1.1\r\nHost: x\r\nX-Evil: a\0b\r\nConnection: close\r\n\r\n",
      },
      {
        name: "NUL in a header name",
        bytes: "GET /api/a/11 HTTP/1.1\r\nHost: x\r\nX-E\0vil: a\r\nConnection: close\r\n\r\n",
      },
      {
        name: "obs-fold continuation line",
        bytes: "GET /api/a/12 HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n Transfer-Encoding: chunked\r\n" +
          "Connection: close\r\n\r\n",
      },
      {
        name: "chunk size overflow",
        bytes: "POST /api/a/13 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" +
          "Connection: close\r\n\r\nfffffffffffffffff1\r\nabc\r\n0\r\n\r\n",
      },
    ];
    let upstreamExpected = 0;
    for (const { name, bytes } of cases) {
      const before = upstream.requests.length;
      const raw = await sendRaw(gw.port, bytes, 3000);
      const statuses = responseStatuses(raw);
      // One answer at most (Connection: close), and the bytes after the first request are
      // never read as a second request on the client side either.
      assert.ok(statuses.length <= 1, `${name}: ${JSON.stringify(raw)}`);
      const status = statuses[0] ?? 0;
      assert.ok(
        status === 0 || status === 400 || status === 200 || status === 413 ||
          status === 501 || status === 502,
        `${name}: ${raw.split("\r\n")[0]}`,
      );
      const reached = upstream.requests.length - before;
      assert.ok(reached <= 1, `${name}: upstream framed ${reached} requests`);
      if (status === 200) {
        assert.equal(reached, 1, name);
        upstreamExpected++;
      }
      for (const request of upstream.requests.slice(before)) {
        assert.ok(!request.requestLine.includes("smuggled"), `${name}: ${request.requestLine}`);
        for (const [header, value] of request.headers) {
          assert.ok(!/[\0\r\n]/.test(header + value), `${name}: ${header}: ${value}`);
        }
      }
    }
    assert.equal(upstream.requests.length, upstreamExpected);
    assert.deepEqual(upstream.framingErrors, []);
    assert.equal(other.requests.length, 0, JSON.stringify(other.requests));
  } finally {
    await gw.close();
    await upstream.close();
    await other.close();
  }
});

Deno.test("pipelined requests and garbage after a request: one upstream request each, in order", async () => {
  const upstream = startRecordingUpstream();
  const gw = await startTestGateway({
    services: { a: { prefix: "/api/a", upstreams: [upstream.origin], timeoutMs: 2000 } },
  });
  try {
    // Two well-formed pipelined requests, then garbage: both answered, garbage answered 400 or
    // the connection closed, and the upstream saw exactly the two requests.
    const raw = await sendRaw(
      gw.port,
      "GET /api/a/one HTTP/1.1\r\nHost: x\r\n\r\n" +
        "POST /api/a/two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" +
        "\x16\x03\x01garbage \r\n\r\n\r\nGET /api/a/three HTTP/1.1\r\n\r\n",
      3000,
    );
    const statuses = responseStatuses(raw);
    assert.deepEqual(statuses.slice(0, 2), [200, 200], raw);
    assert.ok(statuses.slice(2).every((s) => s === 400), raw);
    assert.deepEqual(
      upstream.requests.map((r) => [r.requestLine, r.body]),
      [["GET /api/a/one HTTP/1.1", ""], ["POST /api/a/two HTTP/1.1", "abc"]],
    );
    assert.deepEqual(upstream.framingErrors, []);

    // A body that is longer than its Content-Length: the excess is the next "request" on the
    // client connection (garbage -> 400), never part of the upstream request.
    const before = upstream.requests.length;
    const raw2 = await sendRaw(
      gw.port,
      "POST /api/a/four HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi" +
        "there\r\nGET /api/a/five HTTP/1.1\r\n\r\n",
      3000,
    );
    assert.equal(responseStatuses(raw2)[0], 200, raw2);
    const mine = upstream.requests.slice(before);
    assert.equal(mine[0].body, "hi");
    assert.ok(mine.every((r) => !r.requestLine.includes("five")), JSON.stringify(mine));
    assert.deepEqual(upstream.framingErrors, []);
  } finally {
    await gw.close();
    await upstream.close();
  }
});

Deno.test("X-Forwarded-Host spoofing and encoded traversal never reach admin or another host", async () => {
  const seen: { path: string; host: string | null }[] = [];
  const users = startUpstream((request) => {
    const url = request.url;
    seen.push({ path: url.slice(url.indexOf("/", 8)), host: request.headers.get("host") });
    return new Response("users");
  });
  const canary = startUpstream(() => new Response("canary"));
  const canaryHost = new URL(canary.origin).host;
  const gw = await startTestGateway({
    services: { users: { prefix: "/api/users", upstreams: [users.origin] } },
  }, { BREAKWATER_ADMIN_TOKEN: "s3cret-token" });
  const adminHost = new URL(gw.adminUrl).host;
  try {
    const targets = [
      "/api/users/1",
      "/admin/breakers",
      "/api/users/../../admin/breakers",
      "/api/users/%2e%2e/%2e%2e/admin/breakers",
      "/api/users/%252e%252e/admin/breakers",
      "/api/users/..%2f..%2fadmin%2fbreakers",
      "/api/users/..%5c..%5cadmin/breakers",
      "/api/users\\..\\..\\admin\\breakers",
      "/%61dmin/breakers",
      "/api/users/%2e%2e%2f%2e%2e%2fadmin/breakers/users",
      `http://${adminHost}/admin/breakers`,
      `http://${canaryHost}/api/users/1`,
      `${adminHost}`,
      "*",
    ];
    const hosts = [adminHost, canaryHost, "evil.example", `evil.example, ${canaryHost}`];
    for (const target of targets) {
      for (const host of hosts) {
        for (const method of ["GET", "POST"]) {
          const body = method === "POST" ? '{"action":"open"}' : "";
          const raw = await sendRaw(
            gw.port,
            `${method} ${target} HTTP/1.1\r\nHost: ${host}\r\nX-Forwarded-Host: ${host}\r\n` +
              `Forwarded: host=${host}\r\nX-Original-URL: /admin/breakers\r\n` +
              `X-Rewrite-URL: /admin/breakers\r\nAuthorization: Bearer s3cret-token\r\n` +
              `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
            3000,
          );
          const status = responseStatuses(raw)[0] ?? 0;
          assert.ok([200, 400, 404].includes(status), `${target} ${host}: ${raw.split("\r\n")[0]}`);
          if (status === 200) assert.ok(raw.endsWith("users"), raw);
          assert.ok(!raw.includes('"state"'), `${target} leaked the admin API: ${raw}`);
        }
      }
    }
    assert.equal(canary.requests.length, 0);
    assert.equal(gw.gateway.breaker.view("users").state, "closed");
    for (const request of seen) {
      assert.equal(request.host, new URL(users.origin).host);
      assert.ok(request.path.startsWith("/api/users"), request.path);
    }
  } finally {
    await gw.close();
    await users.close();
    await canary.close();
  }
});

Deno.test("CONNECT and Upgrade never open a tunnel past the gateway", async () => {
  const seen: { method: string; upgrade: string | null; connection: string | null }[] = [];
  const users = startUpstream((request) => {
    seen.push({
      method: request.method,
      upgrade: request.headers.get("upgrade"),
      connection: request.headers.get("connection"),
    });
    return new Response("users");
  });
  const canary = startUpstream(() => new Response("canary"));
  const canaryHost = new URL(canary.origin).host;
  const gw = await startTestGateway({
    // WebSocket proxying off: the Upgrade is then a hop-by-hop header like any other. (On, an
    // upstream that does not switch answers as here too: tests/proxy/websocket_test.ts.)
    services: { users: { prefix: "/api/users", upstreams: [users.origin], websocket: false } },
  });
  try {
    for (
      const target of [canaryHost, `${canaryHost}:443`, `http://${canaryHost}/`, "/api/users/1"]
    ) {
      const raw = await sendRaw(
        gw.port,
        `CONNECT ${target} HTTP/1.1\r\nHost: ${canaryHost}\r\nConnection: close\r\n\r\n`,
        3000,
      );
      const status = responseStatuses(raw)[0] ?? 0;
      assert.ok(status === 0 || status >= 400, `CONNECT ${target}: ${raw.split("\r\n")[0]}`);
    }
    const raw = await sendRaw(
      gw.port,
      `GET /api/users/ws HTTP/1.1\r\nHost: ${canaryHost}\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
        `Sec-WebSocket-Version: 13\r\n\r\nGET /api/users/after HTTP/1.1\r\nHost: x\r\n` +
        `Connection: close\r\n\r\n`,
      3000,
    );
    // No 101: the upgrade is not relayed, and the bytes after it are an ordinary request.
    assert.ok(!responseStatuses(raw).includes(101), raw);
    assert.equal(canary.requests.length, 0);
    for (const request of seen) {
      assert.notEqual(request.method, "CONNECT");
      assert.equal(request.upgrade, null);
      assert.ok(!/upgrade/i.test(request.connection ?? ""), JSON.stringify(request));
    }
  } finally {
    await gw.close();
    await users.close();
    await canary.close();
  }
});
