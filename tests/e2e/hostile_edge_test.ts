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
import {
  type GatewayProcess,
  startGatewayProcess,
  startTestGateway,
  type TestGateway,
} from "../_helpers/gateway.ts";
import { concatBytes, H2_PREFACE, h2Frame, hpackLiterals } from "../_helpers/h2_frames.ts";
import { memoryKiB } from "../_helpers/process.ts";
import { startRecordingUpstream } from "../_helpers/raw_http.ts";
import { startUpstream } from "../_helpers/upstream.ts";
import { bounded, closeAll, waitFor, within } from "../_helpers/wait.ts";
import { createTestCa } from "./_tls_certs.ts";

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

const H2_HEADERS = 0x1;
const H2_RST_STREAM = 0x3;
const H2_SETTINGS = 0x4;
const H2_GOAWAY = 0x7;
const H2_CONTINUATION = 0x9;

interface H2Seen {
  type: number;
  flags: number;
  streamId: number;
  payload: Uint8Array;
}

/** Reads frames from `conn` until it ends or `until` holds, within `timeoutMs`. */
async function readFrames(
  conn: Deno.Conn,
  timeoutMs: number,
  until: (frames: H2Seen[]) => boolean = () => false,
): Promise<{ frames: H2Seen[]; ended: boolean }> {
  const frames: H2Seen[] = [];
  let pending: Uint8Array = new Uint8Array(0);
  const buffer = new Uint8Array(64 * 1024);
  let ended = false;
  await within(
    (async () => {
      while (!until(frames)) {
        const n = await conn.read(buffer).catch(() => null);
        if (n === null) {
          ended = true;
          return;
        }
        pending = concatBytes([pending, buffer.subarray(0, n)]);
        while (pending.length >= 9) {
          const length = (pending[0] << 16) | (pending[1] << 8) | pending[2];
          if (pending.length < 9 + length) break;
          frames.push({
            type: pending[3],
            flags: pending[4],
            streamId: new DataView(pending.buffer, pending.byteOffset + 5, 4).getUint32(0) &
              0x7fffffff,
            payload: pending.slice(9, 9 + length),
          });
          pending = pending.slice(9 + length);
        }
      }
    })(),
    timeoutMs,
    "HTTP/2 frames from the gateway",
  );
  return { frames, ended };
}

/** The GOAWAY error code among `frames`, or null. */
function goAwayCode(frames: H2Seen[]): number | null {
  const goAway = frames.find((f) => f.type === H2_GOAWAY);
  return goAway ? new DataView(goAway.payload.buffer).getUint32(4) : null;
}

async function curlStatus(args: string[]): Promise<string> {
  const output = await new Deno.Command("curl", {
    args: ["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
}

Deno.test("hostile tls listener: plain HTTP, odd SNI, CONTINUATION and SETTINGS floods, hostile :authority and redirect Hosts", async () => {
  const ca = await createTestCa();
  const leaf = await ca.issue("hostile-edge");
  const forwardedHosts: string[] = [];
  const upstream = startUpstream((request) => {
    forwardedHosts.push(request.headers.get("x-forwarded-host") ?? "(none)");
    return new Response("ok");
  });
  let gateway: GatewayProcess | null = null;
  try {
    gateway = await startGatewayProcess({
      listen: {
        hostname: "127.0.0.1",
        port: 0,
        tls: { certFile: leaf.certFile, keyFile: leaf.keyFile, port: 0 },
        redirectToHttps: true,
      },
      limits: { headerTimeoutMs: 1000, maxClientConnections: 3 },
      services: {
        api: { prefix: "/api", upstreams: [upstream.origin], breaker: { failureThreshold: 1 } },
      },
    });
    const tlsPort = gateway.lines.find((l) => l.msg === "listening")!.tlsPort as number;
    const plainPort = Number(new URL(gateway.url).port);
    const caCerts = [await Deno.readTextFile(ca.caFile)];
    const served = async (what: string) => {
      const status = await curlStatus([
        "--http2",
        "--cacert",
        ca.caFile,
        `https://localhost:${tlsPort}/api/ok`,
      ]);
      assert.equal(status, "200", `others are served after ${what}`);
    };
    const pid = gateway.child.pid;
    const baselineKiB = memoryKiB(pid).rss;

    // 1. Plain HTTP bytes on the TLS port: the handshake fails at once, the connection ends.
    const plain = await Deno.connect({ hostname: "127.0.0.1", port: tlsPort });
    try {
      await plain.write(
        new TextEncoder().encode("GET /api/x HTTP/1.1\r\nHost: localhost\r\n\r\n"),
      );
      const answer = await within(
        new Response(plain.readable).arrayBuffer().catch(() => new ArrayBuffer(0)),
        5000,
        "the TLS port's answer to plain HTTP",
      );
      assert.doesNotMatch(new TextDecoder().decode(answer), /HTTP\/1\.1 200/);
    } finally {
      try {
        plain.close();
      } catch {
        // closed by reading to the end
      }
    }
    await served("plain HTTP on the TLS port");

    // 1b. Handshakes that stall after the start of a ClientHello, as many as the connection cap
    // (3): Deno cannot close a socket mid-handshake (README, "TLS and HTTP/2"), but after
    // headerTimeoutMs they no longer count, so they lock nobody out for longer than that.
    const stalled: Deno.TcpConn[] = [];
    const stalledAt = performance.now();
    try {
      for (let i = 0; i < 3; i++) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: tlsPort });
        stalled.push(conn);
        await conn.write(new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]));
      }
      await waitFor(
        async () =>
          (await curlStatus(["--cacert", ca.caFile, `https://localhost:${tlsPort}/api/ok`])) ===
            "200",
        {
          timeoutMs: 8000,
          intervalMs: 100,
          what: "a client served beside three stalled handshakes",
        },
      );
      const servedAfterMs = performance.now() - stalledAt;
      // Not before headerTimeoutMs: the three held the cap until then (the cap is real).
      assert.ok(servedAfterMs >= 900, `served after ${Math.round(servedAfterMs)} ms`);
    } finally {
      for (const conn of stalled) conn.close();
    }

    // 2. No SNI (an IP literal) and odd SNI values: served by the one certificate.
    for (
      const sni of [["-noservername"], ["-servername", "x".repeat(63) + ".example"], [
        "-servername",
        "evil.example",
      ]]
    ) {
      const client = new Deno.Command("openssl", {
        args: [
          "s_client",
          "-connect",
          `127.0.0.1:${tlsPort}`,
          "-alpn",
          "http/1.1",
          "-quiet",
          ...sni,
        ],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const writer = client.stdin.getWriter();
      await writer.write(
        new TextEncoder().encode(
          "GET /api/sni HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        ),
      );
      await writer.close();
      const output = await within(client.output(), 10_000, `openssl s_client ${sni.join(" ")}`);
      assert.match(new TextDecoder().decode(output.stdout), /^HTTP\/1\.1 200 /, sni.join(" "));
    }

    // 3. CONTINUATION flood (CVE-2024-27316's class): a header block that never ends.
    {
      const conn = await Deno.connectTls({
        hostname: "localhost",
        port: tlsPort,
        caCerts,
        alpnProtocols: ["h2"],
      });
      try {
        assert.equal((await conn.handshake()).alpnProtocol, "h2");
        await conn.write(concatBytes([H2_PREFACE, h2Frame(H2_SETTINGS, 0, 0, new Uint8Array())]));
        const headBlock = concatBytes([
          new Uint8Array([0x82, 0x87]),
          hpackLiterals([[0x04, "/api/flood"], [0x01, `localhost:${tlsPort}`]]),
        ]);
        const piece = hpackLiterals([["x-flood", "v".repeat(100)]]);
        const continuation = h2Frame(
          H2_CONTINUATION,
          0,
          1,
          concatBytes(Array.from({ length: 100 }, () => piece)),
        );
        const reading = readFrames(conn, 20_000);
        await conn.write(h2Frame(H2_HEADERS, 0x1, /* END_STREAM, no END_HEADERS */ 1, headBlock));
        let writtenBytes = 0;
        const floodStarted = performance.now();
        try {
          // Up to 256 MiB of header block, 64 frames (~700 KiB) per write, for at most 10 s.
          for (let i = 0; i < 6000 && performance.now() - floodStarted < 10_000; i++) {
            const batch = concatBytes(Array.from({ length: 64 }, () => continuation));
            await within(conn.write(batch), 5000, "a CONTINUATION batch written");
            writtenBytes += batch.length;
          }
        } catch {
          // the server closed the connection: what it should do
        }
        const { frames, ended } = await reading;
        assert.ok(ended, "the flooding connection was ended");
        assert.ok(writtenBytes < 64 * 1024 * 1024, `the flood went on for ${writtenBytes} bytes`);
        const code = goAwayCode(frames);
        assert.ok(code === null || code !== 0, `GOAWAY ${code}`);
        console.log(
          `CONTINUATION flood: cut after ${(writtenBytes / 1024).toFixed(0)} KiB, GOAWAY ${code}`,
        );
      } finally {
        try {
          conn.close();
        } catch {
          // closed by the server
        }
      }
    }
    await served("a CONTINUATION flood");

    // 4. SETTINGS flood (CVE-2019-9515): SETTINGS frames whose ACKs are never read.
    {
      const conn = await Deno.connectTls({
        hostname: "localhost",
        port: tlsPort,
        caCerts,
        alpnProtocols: ["h2"],
      });
      try {
        await conn.handshake();
        await conn.write(H2_PREFACE);
        const settings = h2Frame(H2_SETTINGS, 0, 0, new Uint8Array([0, 3, 0, 0, 0, 100]));
        const batch = concatBytes(Array.from({ length: 4096 }, () => settings));
        let writtenFrames = 0;
        const floodStarted = performance.now();
        try {
          for (let i = 0; i < 250 && performance.now() - floodStarted < 8000; i++) {
            await within(conn.write(batch), 3000, "a SETTINGS batch written");
            writtenFrames += 4096;
          }
        } catch {
          // stalled by backpressure or closed by the server: both bound it
        }
        console.log(
          `SETTINGS flood: ${writtenFrames} frames written in ${
            Math.round(performance.now() - floodStarted)
          } ms`,
        );
        await served("a SETTINGS flood still open");
      } finally {
        try {
          conn.close();
        } catch {
          // closed by the server
        }
      }
    }
    const afterFloodsKiB = memoryKiB(pid).rss;
    console.log(`gateway RSS ${baselineKiB} KiB before the floods, ${afterFloodsKiB} KiB after`);
    assert.ok(
      afterFloodsKiB - baselineKiB < 128 * 1024,
      `RSS grew from ${baselineKiB} to ${afterFloodsKiB} KiB`,
    );

    // 5. Hostile :authority values: each stream answered (HEADERS or RST_STREAM), and no
    // malformed host is forwarded as X-Forwarded-Host.
    {
      const conn = await Deno.connectTls({
        hostname: "localhost",
        port: tlsPort,
        caCerts,
        alpnProtocols: ["h2"],
      });
      try {
        await conn.handshake();
        const authorities = [
          "evil.example/x#",
          "a b",
          "",
          "[::1",
          "x:99999",
          "a@b",
          "..",
          "%00",
          "x".repeat(120),
        ];
        const streams = authorities.map((_, i) => 1 + 2 * i);
        await conn.write(concatBytes([
          H2_PREFACE,
          h2Frame(H2_SETTINGS, 0, 0, new Uint8Array()),
          ...authorities.map((authority, i) =>
            h2Frame(
              H2_HEADERS,
              0x5,
              streams[i],
              concatBytes([
                new Uint8Array([0x82, 0x87]),
                hpackLiterals([[0x04, `/api/a${i}`], [0x01, authority]]),
              ]),
            )
          ),
        ]));
        const { frames } = await readFrames(
          conn,
          10_000,
          (seen) =>
            seen.some((f) => f.type === H2_GOAWAY) ||
            streams.every((id) =>
              seen.some((f) =>
                f.streamId === id && (f.type === H2_HEADERS || f.type === H2_RST_STREAM)
              )
            ),
        );
        const answered = streams.filter((id) =>
          frames.some((f) =>
            f.streamId === id && (f.type === H2_HEADERS || f.type === H2_RST_STREAM)
          )
        );
        const report = streams.map((id, i) => {
          const f = frames.find((f) =>
            f.streamId === id && (f.type === H2_HEADERS || f.type === H2_RST_STREAM)
          );
          return `${JSON.stringify(authorities[i].slice(0, 20))}: ${
            f
              ? (f.type === H2_HEADERS ? `status byte 0x${f.payload[0].toString(16)}` : "RST")
              : "none"
          }`;
        });
        assert.ok(
          goAwayCode(frames) !== null || answered.length === streams.length,
          report.join("; "),
        );
      } finally {
        conn.close();
      }
    }
    for (const host of forwardedHosts) {
      assert.ok(
        host === "(none)" || /^[a-z0-9.-]+(:\d{1,5})?$/i.test(host),
        `forwarded X-Forwarded-Host ${host}`,
      );
    }

    // 6. The plain port's redirect with hostile Hosts and targets: 400 and never reflected, or
    // a 308 to this gateway's name as the client used it, on the TLS port.
    const redirects: [string, string, string | null][] = [
      ["/api/x", "evil.example/x#", null],
      ["/api/x", "a@evil.example", null],
      ["/api/x", "evil.example:80@x", null],
      ["/api/x", "evil.example\t.x", null],
      ["/api/x", "[::1", null],
      ["/api/x", "localhost:99999", null],
      ["/api/x", "", null],
      ["/api/x", "%65vil.example", null],
      ["/api/x", "localhost:8080", `https://localhost:${tlsPort}/api/x`],
      ["//evil.example/x", "localhost", `https://localhost:${tlsPort}//evil.example/x`],
      // The absolute-form target's authority is the request's host (RFC 9112 §3.2.2), so this is
      // `Host: evil.example` as far as the server is concerned: a valid name, reused as sent
      // (the client's own request; nothing of it reaches anyone else).
      ["http://evil.example/api/x", "localhost", `https://evil.example:${tlsPort}/api/x`],
      ["http://a@evil.example/api/x", "localhost", null],
      [
        "/api/x?next=https://evil.example",
        "localhost",
        `https://localhost:${tlsPort}/api/x?next=https://evil.example`,
      ],
    ];
    for (const [target, host, location] of redirects) {
      const answer = await rawExchange(
        plainPort,
        `GET ${target} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
        /(?!)/,
      );
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1]);
      const sent = /^location: *(.*)$/im.exec(answer)?.[1]?.trim() ?? null;
      if (location === null) {
        assert.ok(
          status === 400 || (status === 308 && !/evil/.test(sent ?? "")),
          `${target} Host ${host}: ${answer.slice(0, 200)}`,
        );
        assert.ok(!/evil/.test(sent ?? ""), `${target} Host ${host} redirected to ${sent}`);
      } else {
        assert.equal(status, 308, `${target} Host ${host}`);
        assert.equal(sent, location);
      }
    }

    // No breaker moved: none of this was the upstream's doing.
    const breakers = await (await fetch(`${gateway.adminUrl}/admin/breakers`, bounded())).json();
    assert.equal(breakers.services[0].state, "closed");
    assert.equal(breakers.services[0].failuresInWindow, 0);
  } finally {
    await gateway?.stop();
    await upstream.close();
    await ca.remove();
  }
});

Deno.test({
  name:
    "hostile tls listener: over h2 the :authority is the Host (validated, sent as X-Forwarded-Host)",
  // Deno.serve's HTTP/2 requests carry :authority in request.url only (no host header, and the
  // headers are immutable): without the listener's help the request path sees no Host over h2.
  fn: async () => {
    const ca = await createTestCa();
    const leaf = await ca.issue("hostile-authority");
    const upstream = startUpstream(async (request) =>
      request.method === "POST"
        ? new Response(`body=${await request.text()}`)
        : new Response(request.headers.get("x-forwarded-host") ?? "(none)")
    );
    let gateway: GatewayProcess | null = null;
    try {
      gateway = await startGatewayProcess({
        listen: {
          hostname: "127.0.0.1",
          port: 0,
          tls: { certFile: leaf.certFile, keyFile: leaf.keyFile },
        },
        services: { api: { prefix: "/api", upstreams: [upstream.origin] } },
      });
      const port = gateway.lines.find((l) => l.msg === "listening")!.tlsPort as number;
      for (const flag of ["--http1.1", "--http2"]) {
        const output = await new Deno.Command("curl", {
          args: [
            "-sS",
            "--max-time",
            "10",
            flag,
            "--cacert",
            ca.caFile,
            `https://localhost:${port}/api/x`,
          ],
          stdout: "piped",
        }).output();
        assert.equal(new TextDecoder().decode(output.stdout), `localhost:${port}`, flag);
      }
      // The request body still reaches the upstream over h2.
      const posted = await new Deno.Command("curl", {
        args: [
          "-sS",
          "--max-time",
          "10",
          "--http2",
          "--cacert",
          ca.caFile,
          "--data-binary",
          "payload-over-h2",
          `https://localhost:${port}/api/echo`,
        ],
        stdout: "piped",
      }).output();
      assert.equal(new TextDecoder().decode(posted.stdout), "body=payload-over-h2");
      const conn = await Deno.connectTls({
        hostname: "localhost",
        port,
        caCerts: [await Deno.readTextFile(ca.caFile)],
        alpnProtocols: ["h2"],
      });
      try {
        await conn.handshake();
        const authorities = ["a@b", "x:99999"];
        await conn.write(concatBytes([
          H2_PREFACE,
          h2Frame(H2_SETTINGS, 0, 0, new Uint8Array()),
          ...authorities.map((authority, i) =>
            h2Frame(
              H2_HEADERS,
              0x5,
              1 + 2 * i,
              concatBytes([
                new Uint8Array([0x82, 0x87]),
                hpackLiterals([[0x04, "/api/x"], [0x01, authority]]),
              ]),
            )
          ),
        ]));
        const { frames } = await readFrames(
          conn,
          10_000,
          (seen) => seen.filter((f) => f.type === H2_HEADERS).length === authorities.length,
        );
        // 0x8c: the static table's `:status 400` (RFC 7541 Appendix A).
        const statuses = frames.filter((f) => f.type === H2_HEADERS).map((f) => f.payload[0]);
        assert.deepEqual(statuses, [0x8c, 0x8c]);
      } finally {
        conn.close();
      }
      assert.equal(upstream.requests.length, 3, "only the three curl requests reach the upstream");
    } finally {
      await gateway?.stop();
      await upstream.close();
      await ca.remove();
    }
  },
});

interface WorkerView {
  index: number;
  listening: boolean;
  requests: number;
  restarts: number;
}

Deno.test("hostile clients on workers: connections killed mid-request on both workers, then a worker crash with calls in flight, move no breaker", async () => {
  let seen = 0;
  let aborted = 0;
  const upstream = startUpstream(async (request) => {
    if (!new URL(request.url).pathname.startsWith("/api/slow")) return new Response("ok");
    seen++;
    // Held until the gateway gives the call up (at most 10 s).
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 10_000);
      request.signal.addEventListener("abort", () => {
        aborted++;
        clearTimeout(timer);
        resolve();
      });
    });
    return new Response("late");
  });
  let gateway: GatewayProcess | null = null;
  const conns: Deno.TcpConn[] = [];
  const closeConns = () => {
    for (const conn of conns.splice(0)) {
      try {
        conn.close();
      } catch {
        // closed by the gateway
      }
    }
  };
  try {
    gateway = await startGatewayProcess({
      workers: 2,
      services: {
        api: {
          prefix: "/api",
          upstreams: [upstream.origin],
          timeoutMs: 20_000,
          // Each worker gets half: room for all 24 calls however the kernel spreads them.
          pool: { maxConnections: 64 },
          breaker: { failureThreshold: 1, recoveryTimeoutMs: 60_000 },
        },
      },
    }, { env: { BREAKWATER_TEST_HOOKS: "1" } });
    const port = Number(new URL(gateway.url).port);
    const adminUrl = gateway.adminUrl;
    const workers = async () =>
      ((await (await fetch(`${adminUrl}/admin/workers`, bounded())).json()) as {
        workers: WorkerView[];
      }).workers;
    const breaker = async () =>
      ((await (await fetch(`${adminUrl}/admin/breakers`, bounded())).json()) as {
        services: { state: string; failuresInWindow: number }[];
      }).services[0];
    // Fresh connections land on either worker (the kernel hashes each one): until both served.
    await waitFor(async () => {
      const response = await fetch(
        `${gateway!.url}/api/ok`,
        bounded({ headers: { connection: "close" } }),
      );
      await response.body?.cancel();
      return (await workers()).every((worker) => worker.requests > 0);
    }, { timeoutMs: 10_000, what: "both workers served a request" });

    // 1. 16 slow requests (2^-15 odds that all sit on one worker), then every socket killed.
    const open = async (count: number) => {
      for (let i = 0; i < count; i++) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port });
        conns.push(conn);
        await conn.write(
          new TextEncoder().encode(
            `GET /api/slow/${conns.length} HTTP/1.1\r\nHost: gw.test\r\n\r\n`,
          ),
        );
      }
    };
    await open(16);
    await waitFor(() => seen === 16, { timeoutMs: 10_000, what: "16 calls at the upstream" });
    closeConns();
    await waitFor(() => aborted === 16, {
      timeoutMs: 10_000,
      what: "the gateway gave up all 16 calls",
    });
    assert.deepEqual(await breaker().then((b) => [b.state, b.failuresInWindow]), ["closed", 0]);

    // 2. A worker crashes with calls in flight: its calls end with it; none is the upstream's.
    await open(8);
    await waitFor(() => seen === 24, { timeoutMs: 10_000, what: "8 more calls at the upstream" });
    const crash = await fetch(`${adminUrl}/admin/test/crash-worker/0`, bounded({ method: "POST" }));
    await crash.body?.cancel();
    assert.equal(crash.status, 200);
    await waitFor(async () => {
      const now = await workers();
      return now[0].restarts === 1 && now.every((worker) => worker.listening);
    }, { timeoutMs: 10_000, what: "worker 0 restarted" });
    closeConns();
    await waitFor(() => aborted === 24, { timeoutMs: 10_000, what: "every call given up" });
    assert.deepEqual(await breaker().then((b) => [b.state, b.failuresInWindow]), ["closed", 0]);
    const after = await fetch(`${gateway.url}/api/ok`, bounded());
    assert.equal(await after.text(), "ok");
  } finally {
    closeConns();
    await gateway?.stop();
    await upstream.close();
  }
});
