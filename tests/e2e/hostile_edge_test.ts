/**
 * What landed today, attacked: the admin API's `by` label and audit `limit`, fallback while open
 * with hostile paths, HEAD and clients that vanish, and the TLS listener with bytes and frames a
 * real client would never send (raw sockets, a hand-made HTTP/2 client over `Deno.connectTls`).
 * For every class of bad input: a clear error, nothing lost, and no breaker moved by anyone but
 * the upstream.
 *
 * @module
 */
import assert from "node:assert/strict";
import { startTestGateway, type TestGateway } from "../_helpers/gateway.ts";
import { startRecordingUpstream } from "../_helpers/raw_http.ts";
import { startUpstream } from "../_helpers/upstream.ts";
import { bounded, closeAll, waitFor, within } from "../_helpers/wait.ts";

const TOKEN = "hostile-edge-admin-token-0123456789";
const AUTH = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" };

async function exchange(url: string, init: RequestInit = {}) {
  const response = await fetch(url, bounded(init));
  return { status: response.status, headers: response.headers, text: await response.text() };
}

function force(gw: TestGateway, service: string, body: unknown) {
  return exchange(`${gw.adminUrl}/admin/breakers/${service}`, {
    method: "POST",
    headers: AUTH,
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

Deno.test("hostile admin: 'by' labels that hide, spoof or flood are 400 naming by; audit limit is strict", async () => {
  const upstream = startUpstream(() => new Response("ok"));
  const gw = await startTestGateway(
    { services: { api: { prefix: "/api", upstreams: [upstream.origin] } } },
    { BREAKWATER_ADMIN_TOKEN: TOKEN },
  );
  try {
    const refused: Record<string, string> = {
      "NUL": "a\u0000b",
      "ESC (a terminal escape)": "\u001b[31mroot\u001b[0m",
      "DEL": "a\u007f",
      "CR LF (a forged log line)": "alice\r\nbreaker forced by=bob",
      "NEL, a C1 control": "alice\u0085bob",
      "CSI, a C1 control": "\u009b31mroot",
      "RIGHT-TO-LEFT OVERRIDE (spoofs the timeline)": "\u202enimda",
      "RIGHT-TO-LEFT ISOLATE": "\u2067alice",
      "ZERO WIDTH SPACE only": "\u200b",
      "LINE SEPARATOR": "alice\u2028bob",
      "a lone surrogate": "alice\ud800",
      "65 characters": "x".repeat(65),
      "1 MiB": "y".repeat(1 << 20),
      "blank": "   ",
      "empty": "",
      "the token inside": `ops ${TOKEN}`,
    };
    for (const [what, by] of Object.entries(refused)) {
      const answer = await force(gw, "api", { action: "open", by });
      assert.equal(answer.status, 400, `${what}: ${answer.status} ${answer.text.slice(0, 200)}`);
      assert.match(answer.text, /by/, what);
      assert.ok(!answer.text.includes(TOKEN), `${what}: the answer echoes the token`);
    }
    for (const body of ['{"action":"open","by":123}', '{"action":"open","by":null}', "[", "{}"]) {
      const answer = await force(gw, "api", body);
      assert.equal(answer.status, 400, body);
    }
    // None of those moved the breaker or reached the timeline.
    assert.equal(gw.gateway.breaker.view("api").state, "closed");
    const quiet = JSON.parse((await exchange(`${gw.adminUrl}/admin/audit`)).text);
    assert.deepEqual(quiet.entries, []);

    // Printable unicode is a fine label and is kept as sent (trimmed).
    for (const by of ["Zoë Ångström", "运维-值班", "  ops-bot  "]) {
      const answer = await force(gw, "api", { action: "open", by });
      assert.equal(answer.status, 200, `${by}: ${answer.text}`);
    }
    const audit = JSON.parse((await exchange(`${gw.adminUrl}/admin/audit?limit=3`)).text);
    assert.deepEqual(
      audit.entries.map((entry: { by: string }) => entry.by),
      ["ops-bot", "运维-值班", "Zoë Ångström"],
    );

    // Audit `limit`: 1..1000 written plainly, nothing else.
    for (
      const limit of [
        "0",
        "-1",
        "1001",
        "1e2",
        "0x10",
        "1.0",
        "%201",
        "1%20",
        "%00",
        "%2B1",
        "99999999999",
        "abc",
        "١٢",
      ]
    ) {
      const answer = await exchange(`${gw.adminUrl}/admin/audit?limit=${limit}`);
      assert.equal(answer.status, 400, `limit=${limit}: ${answer.status}`);
      assert.match(answer.text, /limit/);
    }
    for (
      const [query, count] of [["limit=1", 1], ["limit=1000", 3], [
        "limit=1&limit=5000",
        1,
      ]] as const
    ) {
      const answer = await exchange(`${gw.adminUrl}/admin/audit?${query}`);
      assert.equal(answer.status, 200, query);
      assert.equal(JSON.parse(answer.text).entries.length, count, query);
    }
    for (const service of ["__proto__", "constructor", "api%00", "API", "../api"]) {
      const answer = await exchange(`${gw.adminUrl}/admin/audit?service=${service}`);
      assert.equal(answer.status, 404, service);
    }
  } finally {
    await closeAll({ gw, upstream });
  }
});

/** Raw bytes to the gateway on one connection; the answer read until `done` matches or EOF. */
async function rawExchange(port: number, request: string, done: RegExp): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode(request));
    const decoder = new TextDecoder();
    const buffer = new Uint8Array(65536);
    let text = "";
    while (!done.test(text)) {
      const n = await within(conn.read(buffer), 5000, `an answer matching ${done}`);
      if (n === null) break;
      text += decoder.decode(buffer.subarray(0, n), { stream: true });
    }
    return text;
  } finally {
    conn.close();
  }
}

Deno.test("hostile fallback: no path escapes the fallback service's prefix; HEAD gets no body; a vanished client moves no breaker", async () => {
  const down = startUpstream(() => new Response("down", { status: 503 }));
  // The fallback service's upstream sees the request target exactly as sent (a raw recorder:
  // Deno.serve would resolve dot segments itself and hide an escape).
  const cache = startRecordingUpstream();
  let slowAborted = 0;
  const slow = startUpstream(async (request) => {
    // Answers only when the client is gone (or after 5 s): the fallback service is mid-answer.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 5000);
      request.signal.addEventListener("abort", () => {
        slowAborted++;
        clearTimeout(timer);
        resolve();
      });
    });
    return new Response("late");
  });
  const gw = await startTestGateway(
    {
      services: {
        orders: {
          prefix: "/api/orders",
          upstreams: [down.origin],
          escapedSlashes: "keep",
          fallback: { service: "cache" },
        },
        cache: { prefix: "/cache/orders", upstreams: [cache.origin] },
        files: {
          prefix: "/api/files",
          upstreams: [down.origin],
          escapedSlashes: "keep",
          fallback: { service: "mirror" },
        },
        mirror: { prefix: "/mirror", upstreams: [cache.origin], escapedSlashes: "decode" },
        catalog: {
          prefix: "/api/catalog",
          upstreams: [down.origin],
          fallback: {
            status: 200,
            headers: { "content-type": "application/json" },
            body: '{"items":[]}',
          },
        },
        reports: {
          prefix: "/api/reports",
          upstreams: [down.origin],
          fallback: { service: "archive" },
        },
        archive: { prefix: "/archive", upstreams: [slow.origin], timeoutMs: 10_000 },
      },
    },
    { BREAKWATER_ADMIN_TOKEN: TOKEN },
  );
  try {
    for (const service of ["orders", "files", "catalog", "reports"]) {
      assert.equal((await force(gw, service, { action: "open", by: "hostile-test" })).status, 200);
    }
    const generations = () =>
      Object.fromEntries(
        ["orders", "catalog", "reports", "cache", "archive"].map((name) => {
          const view = gw.gateway.breaker.view(name);
          return [name, `${view.state}/${view.generation}/${view.failuresInWindow}`];
        }),
      );
    const before = generations();

    const hostile = [
      "/api/orders/7?x=1",
      "/api/orders",
      "/api/orders/%2e%2e/%2e%2e/admin",
      "/api/orders/.%2e/admin",
      "/api/orders/..%2f..%2fadmin",
      "/api/orders/a%2F..%2F..%2Fadmin",
      "/api/orders/a%5C..%5C..%5Cadmin",
      "/api/orders/..;/..;/admin",
      "/api/orders\\..\\..\\admin",
      "/api/orders/%252e%252e/admin",
      "/api/orders//evil.example/x",
      "/api/orders?x=/../../admin",
      "/api/orders/a%2Fb",
      "/api/orders/%00",
    ];
    for (const target of hostile) {
      const seen = cache.requests.length;
      const answer = await rawExchange(
        gw.port,
        `GET ${target} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n`,
        /(?!)/,
      );
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1]);
      // Refused (400), resolved to a path no service owns (404), or a path the fallback
      // service's own escapedSlashes policy refuses (the refusing breaker's 503): nothing
      // forwarded.
      if (target === "/api/orders/a%2Fb") {
        assert.equal(status, 503, `${target}: the fallback's escapedSlashes "reject" bypassed`);
        assert.match(answer, /x-breakwater-error: breaker_open/i);
      }
      if (status === 400 || status === 404 || status === 503) {
        assert.equal(cache.requests.length, seen, `${target}: refused yet forwarded`);
        continue;
      }
      assert.equal(status, 200, `${target}: ${answer.slice(0, 300)}`);
      assert.match(answer, /x-breakwater-fallback: service=cache/i, target);
      assert.equal(cache.requests.length, seen + 1, target);
      const sent = cache.requests[seen].requestLine.split(" ")[1];
      // Under the prefix as sent, and still under it however the upstream decodes and resolves.
      const decoded = new URL(
        "http://n" + sent.replace(/%2f|%5c/gi, "/").replace(/%2e/gi, "."),
      ).pathname;
      for (const path of [sent.split("?")[0], decoded]) {
        assert.ok(
          path === "/cache/orders" || path.startsWith("/cache/orders/"),
          `${target} reached the fallback upstream as ${sent}`,
        );
      }
    }
    assert.deepEqual(cache.framingErrors, []);
    // A fallback service that decodes encoded slashes gets the path decoded, as if asked itself.
    const decoded = await rawExchange(
      gw.port,
      "GET /api/files/a%2Fb HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
      /(?!)/,
    );
    assert.match(decoded, /^HTTP\/1\.1 200 /, decoded);
    assert.equal(cache.requests.at(-1)?.requestLine, "GET /mirror/a/b HTTP/1.1");

    // HEAD on a static fallback: the head only, the connection still framed right for the next
    // request on it (a body after a HEAD's head would be read as the next response).
    const pipelined = await rawExchange(
      gw.port,
      "HEAD /api/catalog/x HTTP/1.1\r\nHost: gw.test\r\n\r\n" +
        "GET /api/catalog/y HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
      /(?!)/,
    );
    const heads = [...pipelined.matchAll(/HTTP\/1\.1 (\d{3}) /g)];
    assert.equal(heads.length, 2, pipelined);
    assert.equal(pipelined.split('{"items":[]}').length - 1, 1, pipelined);
    assert.match(pipelined, /\r\n\r\n\{"items":\[\]\}$/, pipelined);

    // A client that vanishes while the fallback service is answering: the fallback upstream
    // sees the abort, and no breaker moved, neither the refusing one nor the fallback's.
    const controller = new AbortController();
    const pending = fetch(`${gw.url}/api/reports/r1`, { signal: controller.signal }).catch(
      (error) => error,
    );
    await waitFor(() => slow.requests.length === 1, { what: "the archive upstream reached" });
    controller.abort();
    await pending;
    await waitFor(() => slowAborted === 1, { what: "the archive upstream sees the abort" });
    await waitFor(
      () => gw.logs.some((line) => line.msg === "request" && line.fallback === "service=archive"),
      { what: "the vanished request's access log line" },
    );
    assert.deepEqual(generations(), before);
    assert.equal(down.requests.length, 0, "a forced-open service's own upstream was called");
  } finally {
    await closeAll({ gw, down, cache, slow });
  }
});
