/**
 * WebSocket proxying attacked from both ends, through a real gateway (its own HTTP/1.1 server on
 * loopback): raw-socket clients that break RFC 6455 framing or vanish mid-frame, and raw
 * upstreams that lie in their handshake. For each, the session ends in bounded time with a clear
 * answer, and no breaker moves unless the upstream misbehaved in its handshake (the only part
 * of a session that is judged, README "WebSocket").
 */
import assert from "node:assert/strict";
import { startTestGateway, type TestGateway } from "../_helpers/gateway.ts";
import { startRawUpstream } from "../_helpers/upstream.ts";
import { closeAll, waitFor, within } from "../_helpers/wait.ts";
import { acceptFor } from "../../src/proxy/websocket_handshake.ts";
import {
  handshakeRequest,
  openClient,
  type RawClient,
  rawClient,
  startWebSocketUpstream,
} from "../proxy/websocket_helpers.ts";

const OPCODE_CLOSE = 0x8;
const MASK = [0x11, 0x22, 0x33, 0x44];

/** A frame written byte by byte: first byte, second byte (mask bit and length code), rest. */
function frame(b0: number, lengthCode: number, extended: number[], payload: number[]): Uint8Array {
  return new Uint8Array([
    b0,
    0x80 | lengthCode,
    ...extended,
    ...MASK,
    ...payload.map((byte, i) => byte ^ MASK[i & 3]),
  ]);
}

function closeCodeOf(payload: Uint8Array): number {
  return (payload[0] << 8) | payload[1];
}

/** Reads frames until EOF (at most 5 in 5 s); returns the close codes seen, and "EOF". */
async function framesToEnd(raw: RawClient): Promise<(number | string)[]> {
  const seen: (number | string)[] = [];
  for (let i = 0; i < 5; i++) {
    const next = await raw.frame(5000);
    if (next === null) return [...seen, "EOF"];
    seen.push(next.opcode === OPCODE_CLOSE ? closeCodeOf(next.payload) : `opcode ${next.opcode}`);
  }
  return seen;
}

function chatConfig(origin: string, service: Record<string, unknown> = {}) {
  return {
    services: {
      chat: {
        prefix: "/ws",
        upstreams: [origin],
        breaker: { failureThreshold: 1, recoveryTimeoutMs: 60_000 },
        ...service,
      },
    },
  };
}

function failures(gw: TestGateway): number {
  return gw.gateway.breaker.view("chat").failuresInWindow;
}

/** Reads an upstream's request head off a raw connection. */
async function readHead(conn: Deno.Conn): Promise<string> {
  const buffer = new Uint8Array(8192);
  let head = "";
  while (!head.includes("\r\n\r\n")) {
    const n = await conn.read(buffer);
    if (n === null) return head;
    head += new TextDecoder().decode(buffer.subarray(0, n));
  }
  return head;
}

Deno.test("hostile ws client: framing violations end the session, never a breaker", async () => {
  const upstream = startWebSocketUpstream();
  const gw = await startTestGateway(chatConfig(upstream.origin));
  // Each breaks RFC 6455 in one way. The gateway relays frames untouched, so the upstream is
  // the endpoint that judges them (Deno's: it drops the connection, or closes with 1002); the
  // client must see its session end either way, and the breaker (threshold 1) must not move.
  const violations: Record<string, Uint8Array> = {
    "RSV1 set without an extension (§5.2)": frame(0xc1, 2, [], [104, 105]),
    "unknown data opcode 0x3 (§5.2)": frame(0x83, 2, [], [104, 105]),
    "unknown control opcode 0xB (§5.2)": frame(0x8b, 0, [], []),
    "a fragmented ping (§5.5: control frames MUST NOT be fragmented)": frame(0x09, 2, [], [1, 2]),
    "a ping of 200 bytes (§5.5: at most 125)": frame(0x89, 126, [0, 200], new Array(200).fill(7)),
    "a 64-bit length of 2^63 (§5.2: the most significant bit MUST be 0)": frame(
      0x82,
      127,
      [0x80, 0, 0, 0, 0, 0, 0, 0],
      [1, 2, 3],
    ),
    "a 64-bit length of 2^63-1": frame(0x82, 127, [0x7f, 255, 255, 255, 255, 255, 255, 255], [1]),
    "a close with code 1005 (§7.4.1: MUST NOT be sent)": frame(0x88, 2, [], [0x03, 0xed]),
    "a close with code 1006": frame(0x88, 2, [], [0x03, 0xee]),
    "a close with code 999": frame(0x88, 2, [], [0x03, 0xe7]),
    "a close reason that is not UTF-8 (§5.5.1)": frame(0x88, 4, [], [0x03, 0xe8, 0xff, 0xfe]),
  };
  try {
    for (const [what, bytes] of Object.entries(violations)) {
      const raw = await rawClient(gw.port, handshakeRequest("/ws/v/echo"));
      try {
        assert.equal(raw.status, 101, raw.head);
        await raw.conn.write(bytes);
        const seen = await within(framesToEnd(raw), 6000, `the session's end after ${what}`);
        assert.equal(seen.at(-1), "EOF", `${what}: ${JSON.stringify(seen)}`);
        // Whatever close frame came back is the upstream's protocol-error answer, never a
        // normal closure echoed as if the bad frame were fine.
        for (const code of seen.filter((entry) => typeof entry === "number")) {
          assert.equal(code, 1002, `${what}: ${JSON.stringify(seen)}`);
        }
      } finally {
        raw.close();
      }
    }
    await waitFor(
      () =>
        gw.logs.filter((line) => line.msg === "request" && line.status === 101).length ===
          Object.keys(violations).length,
      { what: "one access log line per session" },
    );
    assert.equal(gw.gateway.breaker.view("chat").state, "closed");
    assert.equal(failures(gw), 0);
    // The service still works for a well-behaved client.
    const client = await openClient(`ws://127.0.0.1:${gw.port}/ws/ok/echo`);
    client.socket.send("still here");
    assert.equal(await client.next(), "echo:still here");
    await client.close();
  } finally {
    await closeAll({ gw, upstream });
  }
});

Deno.test({
  name: "hostile ws client: an unmasked client frame is refused with 1002 (RFC 6455 §5.1)",
  // Deno's upstream (fastwebsockets) accepts unmasked client frames: the gateway, the client's
  // server, must refuse them itself.
  fn: async () => {
    const upstream = startWebSocketUpstream();
    const gw = await startTestGateway(chatConfig(upstream.origin));
    const raw = await rawClient(gw.port, handshakeRequest("/ws/u/echo"));
    try {
      assert.equal(raw.status, 101, raw.head);
      // "hi" as a text frame without a mask.
      await raw.conn.write(new Uint8Array([0x81, 2, 104, 105]));
      const seen = await within(framesToEnd(raw), 6000, "the session's end");
      assert.deepEqual(seen, [1002, "EOF"]);
      await waitFor(() => upstream.sessions[0]?.closed !== null, { what: "the upstream's end" });
      assert.deepEqual(
        upstream.sessions[0].messages,
        [],
        "the unmasked frame reached the upstream",
      );
      assert.equal(failures(gw), 0);
    } finally {
      raw.close();
      await closeAll({ gw, upstream });
    }
  },
});

Deno.test("hostile ws client: vanishing mid-frame ends both sides, counted for nobody", async () => {
  const upstream = startWebSocketUpstream();
  const gw = await startTestGateway(chatConfig(upstream.origin));
  try {
    for (const cut of ["in the header", "in the payload"]) {
      const raw = await rawClient(gw.port, handshakeRequest("/ws/gone/echo"));
      assert.equal(raw.status, 101, raw.head);
      // A binary frame announcing 1 MiB: only its first byte, or its header and 1000 bytes.
      const header = [0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0x10, 0, 0, ...MASK];
      await raw.conn.write(
        new Uint8Array(
          cut === "in the header" ? header.slice(0, 1) : [...header, ...new Array(1000).fill(9)],
        ),
      );
      raw.close();
    }
    await waitFor(
      () => upstream.sessions.length === 2 && upstream.sessions.every((s) => s.closed !== null),
      { what: "both upstream sessions ended" },
    );
    await waitFor(
      () => gw.logs.filter((line) => line.msg === "request" && line.status === 101).length === 2,
      { what: "two access log lines" },
    );
    const endings = gw.logs.filter((line) => line.status === 101).map((line) =>
      (line.websocket as { ending: string }).ending
    );
    assert.deepEqual(endings, ["client_gone", "client_gone"]);
    assert.equal(failures(gw), 0);
    assert.equal(gw.gateway.breaker.view("chat").state, "closed");
  } finally {
    await closeAll({ gw, upstream });
  }
});

Deno.test("hostile ws client: shutdown with a client stalled inside a huge frame ends in bounded time", async () => {
  // An upstream that completes the handshake and then reads and never writes: the gateway
  // cannot put its close frame towards it (the client's frame never ends), so the session
  // must end by the close timeout (5 s), not hang the shutdown.
  const upstream = startRawUpstream(async (conn) => {
    const head = await readHead(conn);
    const key = /sec-websocket-key: *(\S+)/i.exec(head)![1];
    await conn.write(new TextEncoder().encode(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${await acceptFor(key)}\r\n\r\n`,
    ));
    const buffer = new Uint8Array(65536);
    while ((await conn.read(buffer)) !== null) {
      // discard
    }
  });
  const gw = await startTestGateway(chatConfig(upstream.origin));
  const raw = await rawClient(gw.port, handshakeRequest("/ws/stall"));
  try {
    assert.equal(raw.status, 101, raw.head);
    // 2^62 bytes announced, 10 sent.
    await raw.conn.write(
      new Uint8Array([
        0x82,
        0x80 | 127,
        0x40,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        ...MASK,
        ...new Array(10).fill(1),
      ]),
    );
    const startedMs = performance.now();
    await within(gw.close(), 10_000, "the gateway's shutdown");
    const tookMs = performance.now() - startedMs;
    assert.ok(tookMs < 8000, `shutdown took ${Math.round(tookMs)} ms`);
    // The client got the gateway's 1001 (its direction was at a frame boundary).
    const seen = await within(framesToEnd(raw), 6000, "the client's end");
    assert.deepEqual(seen, [1001, "EOF"]);
  } finally {
    raw.close();
    await closeAll({ gw, upstream });
  }
});

Deno.test("hostile ws upstream: lies in the handshake are 502 and counted; a lie after a good 101 is not", async () => {
  const encoder = new TextEncoder();
  const upstream = startRawUpstream(async (conn) => {
    const head = await readHead(conn);
    const path = head.split(" ")[1];
    const key = /sec-websocket-key: *(\S+)/i.exec(head)?.[1] ?? "";
    const switching =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    if (path === "/ws/wrong-accept") {
      await conn.write(
        encoder.encode(
          `${switching}Sec-WebSocket-Accept: ${await acceptFor(
            "AAAAAAAAAAAAAAAAAAAAAA==",
          )}\r\n\r\n`,
        ),
      );
    } else if (path === "/ws/no-accept") {
      await conn.write(encoder.encode(`${switching}\r\n`));
    } else if (path === "/ws/unasked") {
      // A 101 to a request that asked for no upgrade.
      await conn.write(
        encoder.encode(`${switching}\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi`),
      );
    } else if (path === "/ws/then-http") {
      // A correct 101, then HTTP instead of frames.
      await conn.write(encoder.encode(
        `${switching}Sec-WebSocket-Accept: ${await acceptFor(key)}\r\n\r\n` +
          "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi",
      ));
    }
    const buffer = new Uint8Array(4096);
    while ((await conn.read(buffer)) !== null) {
      // until the gateway closes
    }
  });
  const gw = await startTestGateway(
    chatConfig(upstream.origin, { breaker: { failureThreshold: 10, recoveryTimeoutMs: 60_000 } }),
  );
  try {
    for (const [path, counted] of [["/ws/wrong-accept", 1], ["/ws/no-accept", 2]] as const) {
      const raw = await rawClient(gw.port, handshakeRequest(path));
      raw.close();
      assert.equal(raw.status, 502, raw.head);
      assert.match(raw.head, /x-breakwater-error: upstream_unreachable/i);
      assert.equal(failures(gw), counted, path);
    }
    const plain = await fetch(`${gw.url}/ws/unasked`, { signal: AbortSignal.timeout(5000) });
    assert.equal(plain.status, 502);
    assert.equal(plain.headers.get("x-breakwater-error"), "upstream_unreachable");
    await plain.body?.cancel();
    assert.equal(failures(gw), 3);

    // After a good 101 the session is relayed as bytes: the client sees what the upstream sent
    // (no valid frames: a client fails that connection, RFC 6455 §7.1.7), and how the session
    // ends is counted for nobody.
    const raw = await rawClient(gw.port, handshakeRequest("/ws/then-http"));
    try {
      assert.equal(raw.status, 101, raw.head);
      const text = await raw.readUntil(/hi$/, 5000);
      assert.match(text, /^HTTP\/1\.1 200 OK/);
    } finally {
      raw.close();
    }
    await waitFor(
      () => gw.logs.some((line) => line.msg === "request" && line.status === 101),
      { what: "the session's access log line" },
    );
    assert.equal(failures(gw), 3);
    assert.equal(gw.gateway.breaker.view("chat").state, "closed");
  } finally {
    await closeAll({ gw, upstream });
  }
});

Deno.test("hostile ws client: an HTTP/1.0 upgrade is an ordinary request; pipelined requests after a refused one are served", async () => {
  const upstream = startWebSocketUpstream();
  const gw = await startTestGateway(chatConfig(upstream.origin));
  try {
    // HTTP/1.0 has no Upgrade (RFC 9110 §7.8): forwarded plain, Upgrade dropped (README).
    const old = await rawClient(
      gw.port,
      handshakeRequest("/ws/old/echo").replace("HTTP/1.1", "HTTP/1.0"),
    );
    old.close();
    assert.equal(old.status, 200, old.head);
    assert.equal(upstream.sessions.length, 0, "an upstream session was opened for HTTP/1.0");

    // An upgrade the upstream refuses (403), then a plain request pipelined behind it: the
    // connection stays usable, and the second request is answered as HTTP, not relayed.
    const pipelined = await rawClient(
      gw.port,
      handshakeRequest("/ws/p/forbidden") +
        "GET /ws/p/plain HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
    );
    try {
      assert.equal(pipelined.status, 403, pipelined.head);
      const rest = await pipelined.readUntil(/plain \/ws\/p\/plain/, 5000);
      assert.match(rest, /HTTP\/1\.1 200 OK[\s\S]*plain \/ws\/p\/plain upgrade=null$/);
    } finally {
      pipelined.close();
    }
    assert.equal(failures(gw), 0);
  } finally {
    await closeAll({ gw, upstream });
  }
});

Deno.test("hostile ws client: a frame sent in the same write as the handshake is relayed, not lost", async () => {
  const upstream = startWebSocketUpstream();
  const gw = await startTestGateway(chatConfig(upstream.origin));
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: gw.port });
  try {
    // RFC 6455 §4.1 says wait for the 101; a client that does not must lose nothing either.
    const key = [1, 2, 3, 4];
    const head = new TextEncoder().encode(handshakeRequest("/ws/early/echo"));
    const frameBytes = [0x81, 0x82, ...key, 104 ^ key[0], 105 ^ key[1]];
    await conn.write(new Uint8Array([...head, ...frameBytes]));
    const text = await within(
      (async () => {
        const buffer = new Uint8Array(4096);
        let seen = "";
        while (!seen.includes("echo:hi")) {
          const n = await conn.read(buffer);
          if (n === null) break;
          seen += new TextDecoder().decode(buffer.subarray(0, n));
        }
        return seen;
      })(),
      5000,
      "the echo of the early frame",
    );
    assert.match(text, /^HTTP\/1\.1 101 [\s\S]*echo:hi$/);
    assert.deepEqual(upstream.sessions[0].messages, ["hi"]);
  } finally {
    conn.close();
    await closeAll({ gw, upstream });
  }
});

Deno.test("hostile ws client: one that reads nothing holds the gateway's memory to its buffers; every byte arrives once it reads", async () => {
  const TOTAL = 64 * 1024 * 1024;
  let upstreamWroteBytes = 0;
  // An upstream that sends one 64 MiB binary frame as fast as the gateway takes it.
  const upstream = startRawUpstream(async (conn) => {
    const head = await readHead(conn);
    const key = /sec-websocket-key: *(\S+)/i.exec(head)![1];
    await conn.write(new TextEncoder().encode(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${await acceptFor(key)}\r\n\r\n`,
    ));
    const header = new Uint8Array(10);
    header[0] = 0x82;
    header[1] = 127;
    new DataView(header.buffer).setBigUint64(2, BigInt(TOTAL));
    await conn.write(header);
    const chunk = new Uint8Array(64 * 1024).fill(0x5a);
    for (let sent = 0; sent < TOTAL; sent += chunk.length) {
      // Conn.write may take part of a chunk: the rest is written too.
      for (let at = 0; at < chunk.length;) at += await conn.write(chunk.subarray(at));
      upstreamWroteBytes += chunk.length;
    }
    const buffer = new Uint8Array(1024);
    while ((await conn.read(buffer)) !== null) {
      // until the gateway closes
    }
  });
  const gw = await startTestGateway(chatConfig(upstream.origin));
  const raw = await rawClient(gw.port, handshakeRequest("/ws/flood"));
  try {
    assert.equal(raw.status, 101, raw.head);
    // The upstream stalls once the socket buffers on both hops are full.
    let last = -1;
    await waitFor(() => {
      const stalled = upstreamWroteBytes > 0 && upstreamWroteBytes === last;
      last = upstreamWroteBytes;
      return stalled;
    }, { intervalMs: 300, timeoutMs: 10_000, what: "the upstream's writes stalled" });
    assert.ok(
      upstreamWroteBytes < 32 * 1024 * 1024,
      `${upstreamWroteBytes} bytes left the upstream towards a client that reads nothing`,
    );
    // Reading resumes the flow: all of it arrives, byte for byte.
    let received = raw.pending.length;
    const buffer = new Uint8Array(256 * 1024);
    await within(
      (async () => {
        while (received < TOTAL + 10) {
          const n = await raw.conn.read(buffer);
          if (n === null) break;
          received += n;
        }
      })(),
      30_000,
      "the 64 MiB frame read",
    );
    assert.equal(received, TOTAL + 10);
  } finally {
    raw.close();
    await closeAll({ gw, upstream });
  }
});

Deno.test("hostile ws client: an upgrade to an open service goes to its fallback service, marked, never to the refusing upstream", async () => {
  const upstream = startWebSocketUpstream();
  const refusing = startWebSocketUpstream();
  const gw = await startTestGateway(
    {
      services: {
        chat: { prefix: "/ws", upstreams: [refusing.origin], fallback: { service: "spare" } },
        spare: { prefix: "/spare", upstreams: [upstream.origin] },
      },
    },
    { BREAKWATER_ADMIN_TOKEN: "hostile-ws-token" },
  );
  try {
    const forced = await fetch(`${gw.adminUrl}/admin/breakers/chat`, {
      method: "POST",
      headers: { authorization: "Bearer hostile-ws-token" },
      body: '{"action":"open"}',
      signal: AbortSignal.timeout(5000),
    });
    assert.equal(forced.status, 200, await forced.text());
    const raw = await rawClient(gw.port, handshakeRequest("/ws/room/echo"));
    try {
      assert.equal(raw.status, 101, raw.head);
      assert.match(raw.head, /^x-breakwater-fallback: service=spare$/im);
      await raw.send(0x1, new TextEncoder().encode("via spare"));
      assert.equal(new TextDecoder().decode((await raw.frame())!.payload), "echo:via spare");
    } finally {
      raw.close();
    }
    assert.deepEqual(upstream.sessions.map((session) => session.path), ["/spare/room/echo"]);
    assert.equal(refusing.sessions.length, 0);
  } finally {
    await closeAll({ gw, upstream, refusing });
  }
});
