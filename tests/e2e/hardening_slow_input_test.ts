/**
 * Oversize and slow input on real sockets: a huge request head is refused cleanly; a client that
 * trickles its body or stops mid-body is cut off at the service's `timeoutMs` with a clear status
 * (or a closed connection), its pool slot is released, and other clients see no added latency
 * meanwhile.
 */
import assert from "node:assert/strict";
import { startTestGateway, type TestGateway } from "../_helpers/gateway.ts";
import { sendRaw, startUpstream } from "../_helpers/upstream.ts";
import { responseStatuses } from "../_helpers/raw_http.ts";

const encoder = new TextEncoder();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("a 100 KiB request head is refused cleanly; nothing reaches upstream", async () => {
  const upstream = startUpstream(() => new Response("ok"));
  const gw = await startTestGateway({
    services: { a: { prefix: "/a", upstreams: [upstream.origin] } },
  });
  try {
    const huge = "x".repeat(100 * 1024);
    for (
      const bytes of [
        `GET /a/1 HTTP/1.1\r\nHost: x\r\nX-Huge: ${huge}\r\nConnection: close\r\n\r\n`,
        `GET /a/1?${huge} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
        `GET /a/1 HTTP/1.1\r\nHost: x\r\n${
          Array.from({ length: 2000 }, (_, i) => `X-H${i}: ${"v".repeat(40)}\r\n`).join("")
        }Connection: close\r\n\r\n`,
      ]
    ) {
      const raw = await sendRaw(gw.port, bytes, 5000);
      const status = responseStatuses(raw)[0] ?? 0;
      assert.ok([0, 400, 414, 431].includes(status), raw.slice(0, 200));
    }
    assert.equal(upstream.requests.length, 0);
    const after = await fetch(`${gw.url}/a/ok`);
    assert.equal(after.status, 200);
    assert.equal(await after.text(), "ok");
  } finally {
    await gw.close();
    await upstream.close();
  }
});

/** Opens a raw connection, sends a POST head declaring `length` bytes, returns the conn. */
async function startUpload(port: number, length: number): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(
    encoder.encode(
      `POST /a/upload HTTP/1.1\r\nHost: x\r\nContent-Length: ${length}\r\nConnection: close\r\n\r\n`,
    ),
  );
  return conn;
}

/** Reads until the peer closes or `timeoutMs` passes; returns the text and when it ended. */
async function readAll(conn: Deno.Conn, timeoutMs: number): Promise<{ text: string; at: number }> {
  const timer = setTimeout(() => {
    try {
      conn.close();
    } catch {
      // closed
    }
  }, timeoutMs);
  const buffer = new Uint8Array(16 * 1024);
  let text = "";
  try {
    while (true) {
      const n = await conn.read(buffer).catch(() => null);
      if (n === null) break;
      text += new TextDecoder().decode(buffer.subarray(0, n));
      if (text.includes("\r\n\r\n")) {
        // Head is enough: the status is what we assert.
        break;
      }
    }
  } finally {
    clearTimeout(timer);
  }
  return { text, at: performance.now() };
}

async function fastLatencies(gw: TestGateway, untilMs: number): Promise<number[]> {
  const latencies: number[] = [];
  const end = performance.now() + untilMs;
  while (performance.now() < end && latencies.length < 200) {
    const t0 = performance.now();
    const response = await fetch(`${gw.url}/a/fast`);
    await response.text();
    assert.equal(response.status, 200);
    latencies.push(performance.now() - t0);
    await sleep(20);
  }
  return latencies;
}

for (
  const mode of [
    { name: "trickles its body one byte per 150 ms", trickle: true },
    { name: "stops mid-body and stays silent", trickle: false },
  ]
) {
  Deno.test(`a client that ${mode.name} is cut off at timeoutMs; others unaffected`, async () => {
    const upstream = startUpstream(async (request) => {
      const body = request.body ? await request.text().catch(() => "") : "";
      return new Response(`got ${body.length}`);
    });
    const timeoutMs = 800;
    const gw = await startTestGateway({
      services: {
        a: {
          prefix: "/a",
          upstreams: [upstream.origin],
          timeoutMs,
          pool: { maxConnections: 2 },
        },
      },
    });
    let conn: Deno.TcpConn | null = null;
    let trickling = true;
    try {
      conn = await startUpload(gw.port, 1000);
      await conn.write(encoder.encode("0123456789"));
      const t0 = performance.now();
      const trickle = (async () => {
        if (!mode.trickle) return;
        for (let i = 0; i < 40 && trickling; i++) {
          await sleep(150);
          try {
            await conn!.write(encoder.encode("x"));
          } catch {
            return; // the gateway closed the connection: cut off
          }
        }
      })();
      const answered = readAll(conn, timeoutMs + 4000);
      const latencies = await fastLatencies(gw, timeoutMs + 200);
      const { text, at } = await answered;
      trickling = false;
      await trickle;
      const tookMs = at - t0;
      const status = responseStatuses(text)[0] ?? 0;
      // Cut off with a clear status (504 upstream_timeout, or 408/400) or a closed connection,
      // within the deadline plus slack, never at the client's leisure.
      assert.ok([0, 400, 408, 504].includes(status), text);
      assert.ok(tookMs < timeoutMs + 1500, `cut off after ${tookMs.toFixed(0)} ms`);
      assert.ok(tookMs > timeoutMs - 100, `cut off too early: ${tookMs.toFixed(0)} ms`);
      // Other clients were served at full speed meanwhile.
      assert.ok(latencies.length >= 5, `only ${latencies.length} fast requests`);
      const sorted = [...latencies].sort((a, b) => a - b);
      const p90 = sorted[Math.floor(sorted.length * 0.9)];
      assert.ok(p90 < 150, `fast requests p90 ${p90.toFixed(1)} ms`);
      // The slot is released.
      for (let i = 0; i < 50 && gw.gateway.poolUsage().a.active > 0; i++) await sleep(20);
      assert.equal(gw.gateway.poolUsage().a.active, 0);
      assert.equal(gw.gateway.inFlight(), 0);
      const after = await fetch(`${gw.url}/a/after`);
      assert.equal(after.status, 200);
      await after.text();
    } finally {
      trickling = false;
      try {
        conn?.close();
      } catch {
        // closed
      }
      await gw.close();
      await upstream.close();
    }
  });
}

Deno.test("a client that sends half its body then closes frees its slot at once", async () => {
  const upstream = startUpstream(async (request) => {
    await request.text().catch(() => "");
    return new Response("ok");
  });
  const gw = await startTestGateway({
    services: {
      a: {
        prefix: "/a",
        upstreams: [upstream.origin],
        timeoutMs: 5000,
        pool: { maxConnections: 1 },
        // This test is about the slot; the breaker's view of it is the next test.
        breaker: { failureThreshold: 1000 },
      },
    },
  });
  try {
    for (let i = 0; i < 5; i++) {
      const conn = await startUpload(gw.port, 100_000);
      await conn.write(encoder.encode("y".repeat(50_000)));
      await sleep(50);
      conn.close();
    }
    const t0 = performance.now();
    while (gw.gateway.poolUsage().a.active > 0 && performance.now() - t0 < 2000) await sleep(20);
    assert.equal(gw.gateway.poolUsage().a.active, 0);
    assert.ok(performance.now() - t0 < 2000);
    const after = await fetch(`${gw.url}/a/after`);
    assert.equal(after.status, 200);
    await after.text();
  } finally {
    await gw.close();
    await upstream.close();
  }
});

Deno.test({
  name: "clients that abort or stall mid-body do not open the upstream's breaker",
  // A body the client breaks off or stalls is the client's fault: recorded as "aborted" (no
  // failure) and answered 400 bad_request / 408 request_timeout, never 502/504.
  fn: async () => {
    const upstream = startUpstream(async (request) => {
      await request.text().catch(() => "");
      return new Response("ok");
    });
    const gw = await startTestGateway({
      services: {
        a: {
          prefix: "/a",
          upstreams: [upstream.origin],
          timeoutMs: 500,
          breaker: { failureThreshold: 3 },
        },
      },
    });
    try {
      for (let i = 0; i < 4; i++) {
        const conn = await startUpload(gw.port, 100_000);
        await conn.write(encoder.encode("y".repeat(50_000)));
        await sleep(50);
        conn.close();
      }
      const stalled = await Promise.all(Array.from({ length: 4 }, async () => {
        const conn = await startUpload(gw.port, 1000);
        await conn.write(encoder.encode("partial"));
        const { text } = await readAll(conn, 3000);
        try {
          conn.close();
        } catch {
          // closed
        }
        return responseStatuses(text)[0] ?? 0;
      }));
      for (const status of stalled) assert.ok([0, 400, 408].includes(status), String(status));
      assert.equal(gw.gateway.breaker.view("a").state, "closed");
      const after = await fetch(`${gw.url}/a/after`);
      assert.equal(after.status, 200);
      await after.text();
    } finally {
      await gw.close();
      await upstream.close();
    }
  },
});

Deno.test("200 slowloris connections (heads never finished) do not slow other clients", async () => {
  const upstream = startUpstream(() => new Response("ok"));
  const gw = await startTestGateway({
    limits: { maxConnections: 10 },
    services: { a: { prefix: "/a", upstreams: [upstream.origin], pool: { maxConnections: 5 } } },
  });
  const conns: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < 200; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: gw.port });
      conns.push(conn);
      await conn.write(encoder.encode(`GET /a/${i} HTTP/1.1\r\nHost: x\r\nX-Slow: `));
    }
    // A byte more on each, a few times over: a head that is never finished.
    for (let round = 0; round < 3; round++) {
      for (const conn of conns) await conn.write(encoder.encode("z")).catch(() => 0);
    }
    const latencies = await fastLatencies(gw, 600);
    const sorted = [...latencies].sort((a, b) => a - b);
    assert.ok(sorted.length >= 5, `only ${sorted.length} fast requests`);
    assert.ok(sorted[Math.floor(sorted.length * 0.9)] < 150, JSON.stringify(sorted));
    // No slot is held by a request that never finished its head.
    assert.equal(gw.gateway.poolUsage().a.active, 0);
    assert.equal(upstream.requests.length, sorted.length);
  } finally {
    for (const conn of conns) {
      try {
        conn.close();
      } catch {
        // closed by the server
      }
    }
    await gw.close();
    await upstream.close();
  }
});
