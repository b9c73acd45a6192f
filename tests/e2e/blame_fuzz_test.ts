/**
 * Seeded fuzz of client misbehaviour against healthy upstreams: whatever a client does (a method
 * or Host it cannot have, broken framing, a body it breaks off or stalls, a connection it drops
 * at any point), no breaker moves. With a breaker the whole fleet shares, anything else would let
 * one anonymous client take a service down everywhere. Both upstream clients, raw sockets, one
 * gateway process, a fixed seed so a failure replays.
 */
import assert from "node:assert/strict";
import { startGatewayProcess } from "../_helpers/gateway.ts";
import { seededRandom } from "../_helpers/process.ts";
import { startUpstream } from "../_helpers/upstream.ts";

const encoder = new TextEncoder();
const SEED = 20261129;
const CASES = 240;

type Misbehaviour = (port: number, random: () => number) => Promise<void>;

/** Writes `parts` with short pauses, reads for at most `readMs`, then drops the connection. */
async function exchange(
  port: number,
  parts: (string | Uint8Array)[],
  { pauseMs = 0, readMs = 300, closeEarly = false } = {},
): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    for (const part of parts) {
      await conn.write(typeof part === "string" ? encoder.encode(part) : part);
      if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
    }
    if (closeEarly) return;
    const buffer = new Uint8Array(8192);
    const deadline = Date.now() + readMs;
    while (Date.now() < deadline) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const n = await Promise.race([
        conn.read(buffer).catch(() => null),
        new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), readMs)),
      ]);
      clearTimeout(timer);
      if (n === null) return;
    }
  } catch {
    // The gateway closed on us: fine, that is one of the answers.
  } finally {
    try {
      conn.close();
    } catch {
      // closed
    }
  }
}

const SERVICES = ["/h1", "/fe"];

function pick<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)];
}

const misbehaviours: Record<string, Misbehaviour> = {
  refusedMethod: (port, random) => {
    const method = pick(random, ["TRACE", "TRACK", "trace", "Track", "CONNECT"]);
    return exchange(port, [`${method} ${pick(random, SERVICES)}/x HTTP/1.1\r\nHost: gw\r\n\r\n`]);
  },
  oddMethod: (port, random) => {
    const method = pick(random, ["get", "head", "Post", "PROPFIND", "X-CUSTOM", "delete"]);
    return exchange(port, [`${method} ${pick(random, SERVICES)}/x HTTP/1.1\r\nHost: gw\r\n\r\n`]);
  },
  badMethodToken: (port, random) =>
    exchange(port, [`G(ET ${pick(random, SERVICES)}/x HTTP/1.1\r\nHost: gw\r\n\r\n`]),
  hostileHost: (port, random) => {
    const host = pick(random, ["x/h1/admin#", "a b", "h:99999", "", "u@h", "[::1", "gw\x00"]);
    return exchange(port, [`GET ${pick(random, SERVICES)}/x HTTP/1.1\r\nHost: ${host}\r\n\r\n`]);
  },
  duplicateLength: (port, random) =>
    exchange(port, [
      `POST ${pick(random, SERVICES)}/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n` +
      `Content-Length: ${pick(random, ["5", "6"])}\r\n\r\nhello`,
    ]),
  lengthAndChunked: (port, random) =>
    exchange(port, [
      `POST ${pick(random, SERVICES)}/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n` +
      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ]),
  badChunk: (port, random) =>
    exchange(port, [
      `POST ${pick(random, SERVICES)}/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n`,
      pick(random, ["zz\r\nhello\r\n0\r\n\r\n", "5\r\nhelloXX0\r\n\r\n", "5\nhello\n0\n\n"]),
    ]),
  encodedSeparators: (port, random) => {
    const target = pick(random, [
      "/h1/..%2ffe/x",
      "/fe/%5c..%5ch1",
      "/h1/%252e%252e/x",
      "/fe/..;/h1",
    ]);
    return exchange(port, [`GET ${target} HTTP/1.1\r\nHost: gw\r\n\r\n`]);
  },
  bodyBrokenOff: (port, random) => {
    const declared = pick(random, [1000, 70_000, 2_000_000]);
    const sent = Math.floor(random() * declared * 0.9);
    return exchange(port, [
      `POST ${
        pick(random, SERVICES)
      }/up HTTP/1.1\r\nHost: gw\r\nContent-Length: ${declared}\r\n\r\n`,
      new Uint8Array(sent),
    ], { closeEarly: true });
  },
  chunkedBrokenOff: (port, random) =>
    exchange(port, [
      `PUT ${pick(random, SERVICES)}/up HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n`,
      `400\r\n${"a".repeat(1024)}\r\n`,
    ], { closeEarly: true }),
  bodyStalled: (port, random) =>
    exchange(port, [
      `POST ${pick(random, SERVICES)}/up HTTP/1.1\r\nHost: gw\r\nContent-Length: ` +
      `${pick(random, [2048, 3_000_000])}\r\n\r\n`,
      new Uint8Array(100),
    ], { readMs: 1200 }),
  goneBeforeAnswer: (port, random) =>
    exchange(port, [`GET ${pick(random, SERVICES)}/slow HTTP/1.1\r\nHost: gw\r\n\r\n`], {
      closeEarly: true,
    }),
  expectWithoutBody: (port, random) =>
    exchange(port, [
      `POST ${pick(random, SERVICES)}/up HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\n` +
      "Content-Length: 50000\r\n\r\n",
    ], { readMs: 200, closeEarly: random() < 0.5 }),
  hugeHead: (port, random) =>
    exchange(port, [
      `GET ${pick(random, SERVICES)}/x HTTP/1.1\r\nHost: gw\r\nX-Big: ${
        "b".repeat(70_000)
      }\r\n\r\n`,
    ]),
  partialHead: (port, random) =>
    exchange(port, [`GET ${pick(random, SERVICES)}/x HTTP/1.1\r\nHo`], { closeEarly: true }),
  pipelinedGarbage: (port, random) =>
    exchange(port, [
      `GET ${pick(random, SERVICES)}/x HTTP/1.1\r\nHost: gw\r\n\r\n\x00\x01garbage\r\n\r\n`,
    ]),
};

Deno.test("fuzz: client misbehaviour against healthy upstreams never moves a breaker", async () => {
  const upstream = startUpstream(async (request) => {
    if (new URL(request.url).pathname.endsWith("/slow")) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await request.arrayBuffer().catch(() => {});
    return new Response("ok");
  });
  const service = (prefix: string, upstreamClient: string) => ({
    prefix,
    upstreams: [upstream.origin],
    upstreamClient,
    timeoutMs: 800,
    // A hair trigger: two counted failures would open it.
    breaker: { failureThreshold: 2, windowMs: 60_000 },
  });
  const gw = await startGatewayProcess({
    limits: { headerTimeoutMs: 600, bodyIdleTimeoutMs: 500, maxBodyBytes: 4 * 1024 * 1024 },
    services: { h1: service("/h1", "http1"), fe: service("/fe", "fetch") },
  });
  const port = Number(new URL(gw.url).port);
  const random = seededRandom(SEED);
  const names = Object.keys(misbehaviours);
  const tried = new Map<string, number>();
  try {
    // A few at a time, so stalls overlap the rest as they would in the wild.
    for (let i = 0; i < CASES; i += 4) {
      await Promise.all(Array.from({ length: 4 }, () => {
        const name = pick(random, names);
        tried.set(name, (tried.get(name) ?? 0) + 1);
        return misbehaviours[name](port, random);
      }));
    }
    assert.equal(tried.size, names.length, `every kind tried: ${[...tried.keys()]}`);
    const response = await fetch(`${gw.adminUrl}/admin/breakers`, {
      signal: AbortSignal.timeout(5000),
    });
    const { services } = await response.json() as {
      services: { service: string; state: string; failuresInWindow: number }[];
    };
    for (const entry of services) {
      assert.equal(entry.state, "closed", `${entry.service}: ${JSON.stringify(entry)}`);
      assert.equal(entry.failuresInWindow, 0, `${entry.service}: ${JSON.stringify(entry)}`);
    }
    for (const prefix of SERVICES) {
      const ok = await fetch(`${gw.url}${prefix}/after`, { signal: AbortSignal.timeout(5000) });
      assert.equal(await ok.text(), "ok", prefix);
    }
  } finally {
    await gw.stop();
    await upstream.close();
  }
});
