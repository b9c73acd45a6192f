/**
 * Trustworthy forwarding, end to end through a real gateway process and real sockets: the
 * upstream's bytes reach the client unchanged, the upstream receives nothing the client did not
 * send (beyond the forwarding headers), and nothing a client does moves a breaker. Raw sockets
 * wherever curl or fetch would fix a request up. Each case runs for both upstream clients.
 */
import assert from "node:assert/strict";
import { brotliCompressSync, gzipSync } from "node:zlib";
import {
  type GatewayProcess,
  startGatewayProcess,
  type UpstreamClientChoice,
  withUpstreamClient,
} from "../_helpers/gateway.ts";
import { startRecordingUpstream } from "../_helpers/raw_http.ts";
import { sendRaw, startRawUpstream, startUpstream } from "../_helpers/upstream.ts";

const encoder = new TextEncoder();

interface BreakerEntry {
  service: string;
  state: string;
  failuresInWindow: number;
}

async function breakers(gw: GatewayProcess): Promise<Map<string, BreakerEntry>> {
  const response = await fetch(`${gw.adminUrl}/admin/breakers`, {
    signal: AbortSignal.timeout(5000),
  });
  const body = await response.json() as { services: BreakerEntry[] };
  return new Map(body.services.map((entry) => [entry.service, entry]));
}

async function assertUntouched(gw: GatewayProcess, service: string): Promise<void> {
  const entry = (await breakers(gw)).get(service);
  assert.ok(entry !== undefined, `no breaker for ${service}`);
  assert.equal(entry.state, "closed", `${service} breaker`);
  assert.equal(entry.failuresInWindow, 0, `${service} failures in window`);
}

function statusOf(raw: string): number {
  return Number(raw.split(" ")[1]);
}

/** Opens a connection, writes `bytes`, and closes it at once (a client that vanishes). */
async function writeAndVanish(port: number, bytes: Uint8Array): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(bytes);
  } finally {
    conn.close();
  }
}

/** Reads until the peer closes or `timeoutMs` passes; returns the text and when it closed. */
async function readUntilClosed(
  conn: Deno.Conn,
  timeoutMs: number,
): Promise<{ text: string; closedAfterMs: number | null }> {
  const started = performance.now();
  const timer = setTimeout(() => {
    try {
      conn.close();
    } catch {
      // closed already
    }
  }, timeoutMs);
  const buffer = new Uint8Array(16 * 1024);
  let text = "";
  let closedAfterMs: number | null = null;
  try {
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) {
        closedAfterMs = performance.now() - started;
        break;
      }
      text += new TextDecoder().decode(buffer.subarray(0, n));
    }
  } catch {
    // closed by our timer: the gateway kept it open
  } finally {
    clearTimeout(timer);
  }
  try {
    conn.close();
  } catch {
    // closed already
  }
  return { text, closedAfterMs };
}

const PLAIN = encoder.encode(
  Array.from({ length: 300 }, (_, i) => `row ${i}: breakwater passes bytes on unchanged\n`).join(
    "",
  ),
);
const CODED: Record<string, Uint8Array> = {
  plain: PLAIN,
  gzip: new Uint8Array(gzipSync(PLAIN)),
  br: new Uint8Array(brotliCompressSync(PLAIN)),
};

/** An upstream answering `/{coding}/{cl|chunked}` with exactly those bytes and that framing. */
function codingUpstream() {
  return startRawUpstream(async (conn) => {
    const buffer = new Uint8Array(16 * 1024);
    let text = "";
    while (true) {
      while (!text.includes("\r\n\r\n")) {
        const n = await conn.read(buffer).catch(() => null);
        if (n === null) return;
        text += new TextDecoder().decode(buffer.subarray(0, n));
      }
      const head = text.slice(0, text.indexOf("\r\n\r\n"));
      text = text.slice(text.indexOf("\r\n\r\n") + 4);
      const [, coding, framing] = head.split(" ")[1].split("/").slice(1);
      const body = CODED[coding] ?? PLAIN;
      const lines = ["HTTP/1.1 200 OK", "content-type: text/plain", `etag: "${coding}"`];
      if (coding !== "plain") lines.push(`content-encoding: ${coding}`);
      let payload: Uint8Array;
      if (framing === "cl") {
        lines.push(`content-length: ${body.length}`);
        payload = body;
      } else {
        lines.push("transfer-encoding: chunked");
        const half = Math.floor(body.length / 2);
        const parts = [body.subarray(0, half), body.subarray(half)];
        const chunks: Uint8Array[] = [];
        for (const part of parts) {
          chunks.push(
            encoder.encode(`${part.length.toString(16)}\r\n`),
            part,
            encoder.encode("\r\n"),
          );
        }
        chunks.push(encoder.encode("0\r\n\r\n"));
        payload = new Uint8Array(await new Blob(chunks as BlobPart[]).arrayBuffer());
      }
      await conn.write(encoder.encode(lines.join("\r\n") + "\r\n\r\n"));
      await conn.write(payload);
    }
  });
}

/** curl through the gateway: body bytes as received (content coding kept) and the headers. */
async function curl(url: string, args: string[]): Promise<{ body: Uint8Array; head: string }> {
  const dir = await Deno.makeTempDir();
  try {
    const output = await new Deno.Command("curl", {
      args: ["-sS", "--max-time", "5", "-o", `${dir}/body`, "-D", `${dir}/head`, ...args, url],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(
      output.code,
      0,
      `curl ${args.join(" ")} ${url}: ${new TextDecoder().decode(output.stderr)}`,
    );
    return {
      body: await Deno.readFile(`${dir}/body`),
      head: (await Deno.readTextFile(`${dir}/head`)).toLowerCase(),
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

for (const client of ["http1", "fetch"] as UpstreamClientChoice[]) {
  const name = (text: string) => `[${client}] ${text}`;

  Deno.test(
    name("fidelity matrix: Accept-Encoding x coding x framing through the gateway"),
    async () => {
      const upstream = codingUpstream();
      const gw = await startGatewayProcess(
        withUpstreamClient(
          { services: { m: { prefix: "/m", upstreams: [upstream.origin] } } },
          client,
        ),
      );
      try {
        for (const accept of [null, "gzip", "br", "identity"]) {
          for (const coding of ["plain", "gzip", "br"]) {
            for (const framing of ["cl", "chunked"]) {
              const url = `${gw.url}/m/${coding}/${framing}`;
              const label = `${accept} ${coding} ${framing}`;
              // As received: curl undoes the chunked framing only, never the content coding.
              const raw = await curl(
                url,
                accept === null ? [] : ["-H", `Accept-Encoding: ${accept}`],
              );
              const labelled = /^content-encoding: (\S+)/m.exec(raw.head)?.[1] ?? null;
              if (client === "http1") {
                // Byte for byte what the upstream sent, with its labels.
                assert.deepEqual(raw.body, CODED[coding], label);
                assert.equal(labelled, coding === "plain" ? null : coding, label);
                if (framing === "cl") {
                  assert.match(
                    raw.head,
                    new RegExp(`content-length: ${CODED[coding].length}`),
                    label,
                  );
                }
              } else {
                // Consistent: labelled bytes are those of the label, unlabelled ones are plain.
                assert.deepEqual(raw.body, labelled === null ? PLAIN : CODED[labelled], label);
              }
              // And a real client that asks for compression decodes every answer.
              const decoded = await curl(url, ["--compressed"]);
              assert.deepEqual(decoded.body, PLAIN, `${label} --compressed`);
            }
          }
        }
      } finally {
        await gw.stop();
        await upstream.close();
      }
    },
  );

  Deno.test(
    name("compressed answers arrive byte for byte; curl --compressed decodes them"),
    async () => {
      const plain = encoder.encode(
        JSON.stringify({ items: Array.from({ length: 40 }, (_, i) => i) }),
      );
      const gzipped = new Uint8Array(gzipSync(plain));
      const upstream = startUpstream(() =>
        new Response(gzipped, {
          headers: { "content-encoding": "gzip", "content-type": "application/json" },
        })
      );
      const gw = await startGatewayProcess(
        withUpstreamClient(
          { services: { z: { prefix: "/z", upstreams: [upstream.origin] } } },
          client,
        ),
      );
      try {
        const dir = await Deno.makeTempDir();
        const out = `${dir}/body`;
        const curl = await new Deno.Command("curl", {
          args: ["-sS", "--compressed", "-o", out, "-w", "%{http_code}", `${gw.url}/z/data`],
          stdout: "piped",
          stderr: "piped",
        }).output();
        assert.equal(curl.code, 0, new TextDecoder().decode(curl.stderr));
        assert.equal(new TextDecoder().decode(curl.stdout), "200");
        assert.deepEqual(await Deno.readFile(out), plain);
        await Deno.remove(dir, { recursive: true });

        const raw = await sendRaw(
          Number(new URL(gw.url).port),
          "GET /z/data HTTP/1.1\r\nHost: gw\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
        );
        const head = raw.slice(0, raw.indexOf("\r\n\r\n")).toLowerCase();
        if (client === "http1") {
          // Byte-transparent: compressed stays compressed, with the upstream's length.
          assert.match(head, /content-encoding: gzip/);
          assert.match(head, new RegExp(`content-length: ${gzipped.length}`));
        } else {
          // fetch decoded it; the gateway then drops the labels so the bytes stay consistent.
          assert.doesNotMatch(head, /content-encoding: gzip/);
        }
      } finally {
        await gw.stop();
        await upstream.close();
      }
    },
  );

  Deno.test(name("client mistakes never move a breaker"), async () => {
    const upstream = startUpstream(async (request) => {
      await request.arrayBuffer().catch(() => {});
      return new Response("ok");
    });
    const gw = await startGatewayProcess(
      withUpstreamClient({
        limits: { headerTimeoutMs: 2000, bodyIdleTimeoutMs: 600 },
        services: {
          users: {
            prefix: "/api/users",
            upstreams: [upstream.origin],
            timeoutMs: 1500,
            breaker: { failureThreshold: 2 },
          },
        },
      }, client),
    );
    const port = Number(new URL(gw.url).port);
    try {
      for (const method of ["TRACE", "TRACK", "CONNECT", "trace"]) {
        for (let i = 0; i < 3; i++) {
          const target = method.toUpperCase() === "CONNECT" ? "127.0.0.1:1" : "/api/users/x";
          const raw = await sendRaw(
            port,
            `${method} ${target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n`,
          );
          assert.equal(statusOf(raw), method.toUpperCase() === "CONNECT" ? 405 : 405, method);
        }
      }
      for (let i = 0; i < 3; i++) {
        const raw = await sendRaw(
          port,
          "get /api/users/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
        );
        // Forwarded as sent (http1), or refused as a request fetch cannot send faithfully.
        assert.ok([200, 400].includes(statusOf(raw)), raw.split("\r\n")[0]);
      }
      for (const host of ["x/api/orders/admin#", "a b", "h:99999"]) {
        const raw = await sendRaw(
          port,
          `GET /api/users/1 HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
        );
        assert.equal(statusOf(raw), 400, host);
      }
      // Bodies over 1 MiB broken off, and one stalled past timeoutMs.
      for (let i = 0; i < 3; i++) {
        await writeAndVanish(
          port,
          encoder.encode(
            `POST /api/users/up HTTP/1.1\r\nHost: gw\r\nContent-Length: 4194304\r\n\r\n` +
              "x".repeat(200_000),
          ),
        );
      }
      const stalled = await Deno.connect({ hostname: "127.0.0.1", port });
      await stalled.write(
        encoder.encode(
          `POST /api/users/up HTTP/1.1\r\nHost: gw\r\nContent-Length: 2097152\r\n\r\n` +
            "y".repeat(100_000),
        ),
      );
      const { text } = await readUntilClosed(stalled, 5000);
      assert.ok([408, 0].includes(statusOf(text) || 0), text.split("\r\n")[0]);
      await new Promise((resolve) => setTimeout(resolve, 200));
      await assertUntouched(gw, "users");
      const ok = await fetch(`${gw.url}/api/users/after`, { signal: AbortSignal.timeout(5000) });
      assert.equal(ok.status, 200);
      await ok.body?.cancel();
    } finally {
      await gw.stop();
      await upstream.close();
    }
  });

  Deno.test(name("the upstream receives what the client sent, framing included"), async () => {
    const recorder = startRecordingUpstream();
    const gw = await startGatewayProcess(
      withUpstreamClient(
        { services: { r: { prefix: "/r", upstreams: [recorder.origin] } } },
        client,
      ),
    );
    const port = Number(new URL(gw.url).port);
    try {
      let raw = await sendRaw(
        port,
        "GET /r/plain HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
      );
      assert.equal(statusOf(raw), 200);
      raw = await sendRaw(
        port,
        "POST /r/small HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
      );
      assert.equal(statusOf(raw), 200);
      // A repeated Content-Length, equal values or not, never reaches the upstream.
      raw = await sendRaw(
        port,
        "POST /r/dup HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
      );
      assert.equal(statusOf(raw), 400);
      const seen = recorder.requests.map((request) => request.requestLine);
      assert.ok(!seen.some((line) => line.includes("/dup")), JSON.stringify(seen));
      const [plain, small] = recorder.requests;
      const names = plain.headers.map(([headerName]) => headerName).sort();
      const forwarding = [
        "host",
        "via",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-request-id",
      ];
      if (client === "http1") {
        assert.deepEqual(names, forwarding);
        assert.ok(small.headers.some(([n, v]) => n === "content-length" && v === "5"));
        assert.ok(!small.headers.some(([n]) => n === "transfer-encoding"));
      } else {
        // fetch's documented deviations: it adds accept, accept-language and user-agent.
        for (const added of names.filter((n) => !forwarding.includes(n))) {
          assert.ok(
            ["accept", "accept-language", "user-agent", "accept-encoding"].includes(added),
            added,
          );
        }
      }
      assert.equal(small.body, "hello");
      assert.deepEqual(recorder.framingErrors, []);
    } finally {
      await gw.stop();
      await recorder.close();
    }
  });

  Deno.test(
    name("an upstream that stalls mid-body is cut at bodyIdleTimeoutMs; SSE keeps flowing"),
    async () => {
      const staller = startRawUpstream(async (conn) => {
        const buffer = new Uint8Array(4096);
        await conn.read(buffer);
        await conn.write(
          encoder.encode("HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n" + "a".repeat(100)),
        );
        // Then nothing, and the connection stays open until the gateway gives up.
        await conn.read(buffer).catch(() => null);
      });
      const sse = startUpstream(() => {
        let sent = 0;
        return new Response(
          new ReadableStream({
            async pull(controller) {
              await new Promise((resolve) => setTimeout(resolve, 150));
              controller.enqueue(encoder.encode(`data: ${sent}\n\n`));
              if (++sent === 8) controller.close();
            },
          }),
          { headers: { "content-type": "text/event-stream" } },
        );
      });
      const gw = await startGatewayProcess(
        withUpstreamClient({
          services: {
            stall: { prefix: "/stall", upstreams: [staller.origin], bodyIdleTimeoutMs: 500 },
            sse: {
              prefix: "/sse",
              upstreams: [sse.origin],
              timeoutMs: 400,
              bodyIdleTimeoutMs: 500,
            },
          },
        }, client),
      );
      try {
        const started = performance.now();
        const response = await fetch(`${gw.url}/stall/x`, { signal: AbortSignal.timeout(5000) });
        assert.equal(response.status, 200);
        await assert.rejects(response.arrayBuffer());
        const cutAfterMs = performance.now() - started;
        assert.ok(cutAfterMs >= 400 && cutAfterMs < 3000, `cut after ${cutAfterMs} ms`);
        const ready = await (await fetch(`${gw.url}/readyz`)).json();
        assert.equal(ready.services.stall.pool.active, 0);
        // The stall is the upstream's failure, counted although its head said 200.
        const stalled = (await breakers(gw)).get("stall");
        assert.ok((stalled?.failuresInWindow ?? 0) >= 1, JSON.stringify(stalled));

        // 8 events over ~1.2 s through a 400 ms timeoutMs: a flowing body is never cut.
        const events = await (await fetch(`${gw.url}/sse/events`, {
          signal: AbortSignal.timeout(5000),
        })).text();
        assert.equal(events.match(/data: /g)?.length, 8);
        const stopStarted = performance.now();
        const status = await gw.stop();
        assert.equal(status.code, 0);
        assert.ok(performance.now() - stopStarted < 5000);
      } finally {
        await gw.stop().catch(() => {});
        await staller.close();
        await sse.close();
      }
    },
  );
}

Deno.test("a client that uploads slowly does not make the upstream a slow call", async () => {
  const upstream = startUpstream(async (request) => {
    await request.arrayBuffer();
    return new Response("ok");
  });
  const gw = await startGatewayProcess({
    services: {
      s: {
        prefix: "/s",
        upstreams: [upstream.origin],
        breaker: { failureThreshold: 1, slowCallMs: 200 },
      },
    },
  });
  const port = Number(new URL(gw.url).port);
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(
      encoder.encode(
        "POST /s/up HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
      ),
    );
    for (let i = 0; i < 4; i++) {
      await new Promise((resolve) => setTimeout(resolve, 150));
      await conn.write(encoder.encode("5\r\nhello\r\n"));
    }
    await conn.write(encoder.encode("0\r\n\r\n"));
    const { text } = await readUntilClosed(conn, 3000);
    assert.equal(statusOf(text), 200, text.split("\r\n")[0]);
    // 600 ms of the client's trickle, a quick upstream: no slow call, the breaker is untouched.
    await assertUntouched(gw, "s");
  } finally {
    await gw.stop();
    await upstream.close();
  }
});

Deno.test("limits.maxClientConnections: a connection beyond it is closed at once", async () => {
  const upstream = startUpstream(() => new Response("ok"));
  const gw = await startGatewayProcess({
    // One thread: with workers each takes a share of the limit (README, "Workers").
    workers: 1,
    limits: { maxClientConnections: 2 },
    services: { a: { prefix: "/a", upstreams: [upstream.origin] } },
  });
  const port = Number(new URL(gw.url).port);
  const held: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < 2; i++) held.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    // Accepted only once the gateway has seen the two: let its accept loop run.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const extra = await Deno.connect({ hostname: "127.0.0.1", port });
    const { closedAfterMs } = await readUntilClosed(extra, 3000);
    assert.ok(closedAfterMs !== null && closedAfterMs < 1500, `closed after ${closedAfterMs}`);
    for (const conn of held) conn.close();
    held.length = 0;
    // With the two gone, clients are served again.
    let served = false;
    for (let i = 0; i < 20 && !served; i++) {
      const response = await fetch(`${gw.url}/a/x`, { signal: AbortSignal.timeout(2000) })
        .catch(() => null);
      served = response?.status === 200;
      await response?.body?.cancel();
      if (!served) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.ok(served, "served again after the held connections closed");
  } finally {
    for (const conn of held) conn.close();
    await gw.stop();
    await upstream.close();
  }
});

Deno.test("request heads and idle connections are timed out", async () => {
  const upstream = startUpstream(() => new Response("ok"));
  const gw = await startGatewayProcess({
    limits: { headerTimeoutMs: 500, idleTimeoutMs: 700 },
    services: { a: { prefix: "/a", upstreams: [upstream.origin] } },
  });
  const port = Number(new URL(gw.url).port);
  try {
    const idle = await Deno.connect({ hostname: "127.0.0.1", port });
    const partial = await Deno.connect({ hostname: "127.0.0.1", port });
    await partial.write(encoder.encode("GET /a/x HTTP/1.1\r\nHost: gw\r\n"));
    const slow = await Deno.connect({ hostname: "127.0.0.1", port });
    const dribble = (async () => {
      for (const byte of encoder.encode("GET /a/x HTTP/1.1\r\nHost: gw\r\nX-Slow: 1")) {
        try {
          await slow.write(new Uint8Array([byte]));
        } catch {
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    })();
    const [idleResult, partialResult, slowResult] = await Promise.all([
      readUntilClosed(idle, 5000),
      readUntilClosed(partial, 5000),
      readUntilClosed(slow, 5000),
    ]);
    await dribble;
    assert.ok(idleResult.closedAfterMs !== null && idleResult.closedAfterMs < 3000, "idle");
    assert.ok(partialResult.closedAfterMs !== null && partialResult.closedAfterMs < 3000);
    assert.equal(statusOf(partialResult.text), 408);
    assert.ok(slowResult.closedAfterMs !== null && slowResult.closedAfterMs < 3000, "slowloris");
    // Others are served meanwhile and after.
    const ok = await fetch(`${gw.url}/a/ok`, { signal: AbortSignal.timeout(5000) });
    assert.equal(await ok.text(), "ok");
  } finally {
    await gw.stop();
    await upstream.close();
  }
});
