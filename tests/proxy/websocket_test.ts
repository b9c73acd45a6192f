/**
 * WebSocket proxying through a real gateway (its own HTTP/1.1 server on loopback) to a real
 * WebSocket upstream (`Deno.serve` + `Deno.upgradeWebSocket`), with Deno's `WebSocket` client
 * and a raw socket client for what that client hides (pings, the 101's fields, bad handshakes).
 */
import assert from "node:assert/strict";
import { startTestGateway } from "../_helpers/gateway.ts";
import { startRawUpstream } from "../_helpers/upstream.ts";
import { closeAll, waitFor, within } from "../_helpers/wait.ts";
import { acceptFor } from "../../src/proxy/websocket_handshake.ts";
import {
  handshakeRequest,
  openClient,
  rawClient,
  readUpgradeHead,
  startWebSocketUpstream,
  switchFor,
  type TestClient,
} from "./websocket_helpers.ts";

const OPCODE_TEXT = 0x1;
const OPCODE_CLOSE = 0x8;
const OPCODE_PING = 0x9;
const OPCODE_PONG = 0xa;

function chatConfig(origin: string, service: Record<string, unknown> = {}) {
  return { services: { chat: { prefix: "/ws", upstreams: [origin], ...service } } };
}

function wsUrl(port: number, path: string): string {
  return `ws://127.0.0.1:${port}${path}`;
}

function closePayload(code: number, reason: string): Uint8Array {
  const text = new TextEncoder().encode(reason);
  const payload = new Uint8Array(2 + text.length);
  payload[0] = code >> 8;
  payload[1] = code & 0xff;
  payload.set(text, 2);
  return payload;
}

Deno.test("text and binary both ways, a 10 MiB binary message, forwarding headers upstream", async () => {
  const upstream = startWebSocketUpstream();
  const gw = await startTestGateway(chatConfig(upstream.origin));
  let client: TestClient | null = null;
  try {
    client = await openClient(wsUrl(gw.port, "/ws/room/echo?x=1"));
    client.socket.send("hello");
    assert.equal(await client.next(), "echo:hello");
    const big = new Uint8Array(10 * 1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
    client.socket.send(big);
    const back = await client.next(20_000);
    assert.ok(back instanceof Uint8Array);
    assert.equal(back.length, big.length);
    assert.deepEqual(back, big);
    const session = upstream.sessions[0];
    assert.equal(session.path, "/ws/room/echo");
    assert.equal(session.headers.get("via"), "1.1 breakwater");
    assert.equal(session.headers.get("x-forwarded-for"), "127.0.0.1");
    assert.ok(session.headers.get("x-request-id"));
    assert.equal((session.messages[1] as Uint8Array).length, big.length);
  } finally {
    await client?.close();
    await closeAll({ gw, upstream });
  }
});

Deno.test("close codes and reasons pass both ways; the access log line comes at the end", async () => {
  const upstream = startWebSocketUpstream();
  const gw = await startTestGateway(chatConfig(upstream.origin));
  const clients: TestClient[] = [];
  try {
    const first = await openClient(wsUrl(gw.port, "/ws/a/echo"));
    clients.push(first);
    first.socket.send("before");
    assert.equal(await first.next(), "echo:before");
    first.socket.close(4001, "client says bye");
    const closed = await first.waitClosed();
    assert.equal(closed.code, 4001);
    assert.equal(closed.reason, "client says bye");
    await waitFor(() => upstream.sessions[0]?.closed !== null, { what: "the upstream's close" });
    assert.deepEqual(upstream.sessions[0].closed, { code: 4001, reason: "client says bye" });

    const second = await openClient(wsUrl(gw.port, "/ws/b/echo"));
    clients.push(second);
    second.socket.send("close:4002:server says bye");
    const byServer = await second.waitClosed();
    assert.equal(byServer.code, 4002);
    assert.equal(byServer.reason, "server says bye");

    await waitFor(
      () => gw.logs.filter((line) => line.msg === "request" && line.status === 101).length === 2,
      { what: "two access log lines with status 101" },
    );
    const lines = gw.logs.filter((line) => line.msg === "request" && line.status === 101);
    const [a, b] = lines.map((line) => line.websocket as Record<string, unknown>);
    assert.equal(a.closeCode, 4001);
    assert.equal(a.ending, "client_closed");
    assert.ok((a.bytesFromClient as number) > 0);
    assert.equal(b.closeCode, 4002);
    assert.equal(b.ending, "upstream_closed");
    assert.equal(lines[0].service, "chat");
  } finally {
    for (const client of clients) await client.close();
    await closeAll({ gw, upstream });
  }
});

Deno.test("raw client: the 101's fields, ping answered by pong, a close frame answered", async () => {
  const upstream = startWebSocketUpstream();
  const gw = await startTestGateway(chatConfig(upstream.origin));
  const key = "AQIDBAUGBwgJCgsMDQ4PEA==";
  const raw = await rawClient(gw.port, handshakeRequest("/ws/raw/echo", { key }));
  try {
    assert.equal(raw.status, 101, raw.head);
    const fields = new Headers(
      raw.head.split("\r\n").slice(1).map((line) => {
        const colon = line.indexOf(":");
        return [line.slice(0, colon), line.slice(colon + 1).trim()] as [string, string];
      }),
    );
    assert.equal(fields.get("upgrade")?.toLowerCase(), "websocket");
    assert.equal(fields.get("connection")?.toLowerCase(), "upgrade");
    assert.equal(fields.get("sec-websocket-accept"), await acceptFor(key));
    assert.equal(fields.get("via"), "1.1 breakwater");
    assert.ok(fields.get("x-request-id"));

    await raw.send(OPCODE_PING, new TextEncoder().encode("p1"));
    const pong = await raw.frame();
    assert.equal(pong?.opcode, OPCODE_PONG);
    assert.equal(new TextDecoder().decode(pong!.payload), "p1");

    await raw.send(OPCODE_TEXT, new TextEncoder().encode("masked"));
    const echo = await raw.frame();
    assert.equal(new TextDecoder().decode(echo!.payload), "echo:masked");

    await raw.send(OPCODE_CLOSE, closePayload(1000, "done"));
    const close = await raw.frame();
    assert.equal(close?.opcode, OPCODE_CLOSE);
    assert.equal((close!.payload[0] << 8) | close!.payload[1], 1000);
    // The upstream closes its TCP side after the close handshake; the gateway passes that on.
    assert.equal(await raw.frame(), null);
  } finally {
    raw.close();
    await closeAll({ gw, upstream });
  }
});

Deno.test("bad handshakes are 400; CONNECT stays 405; other Upgrade values are not upgraded", async () => {
  const upstream = startWebSocketUpstream();
  const gw = await startTestGateway(chatConfig(upstream.origin));
  try {
    for (
      const [request, detail] of [
        [handshakeRequest("/ws/x/echo", { key: "short" }), /Sec-WebSocket-Key/],
        [handshakeRequest("/ws/x/echo", { key: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==" }), /Key/],
        [handshakeRequest("/ws/x/echo", { version: "8" }), /Sec-WebSocket-Version/],
        [
          handshakeRequest("/ws/x/echo").replace("GET ", "POST ").replace(
            "\r\n\r\n",
            "\r\nContent-Length: 0\r\n\r\n",
          ),
          /must be GET/,
        ],
      ] as const
    ) {
      const raw = await rawClient(gw.port, request);
      try {
        assert.equal(raw.status, 400, raw.head);
        assert.match(raw.head, /x-breakwater-error: bad_request/i);
        assert.match(await raw.readUntil(detail), detail);
      } finally {
        raw.close();
      }
    }
    assert.equal(upstream.sessions.length, 0);

    const connect = await rawClient(
      gw.port,
      "CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n",
    );
    connect.close();
    assert.equal(connect.status, 405);

    // h2c is not WebSocket: answered as an ordinary request, Upgrade dropped as hop-by-hop.
    const h2c = await rawClient(
      gw.port,
      "GET /ws/plain HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n" +
        "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nContent-Length: 0\r\n\r\n",
    );
    try {
      assert.equal(h2c.status, 200, h2c.head);
      const body = await h2c.readUntil(/upgrade=/);
      assert.match(body, /plain \/ws\/plain upgrade=null/);
    } finally {
      h2c.close();
    }
  } finally {
    await closeAll({ gw, upstream });
  }
});

Deno.test("an upstream's 403 is passed and not counted; its 503 is passed and counted", async () => {
  const upstream = startWebSocketUpstream();
  const gw = await startTestGateway(
    chatConfig(upstream.origin, { breaker: { failureThreshold: 2, recoveryTimeoutMs: 60_000 } }),
  );
  try {
    for (let i = 0; i < 4; i++) {
      const raw = await rawClient(gw.port, handshakeRequest("/ws/x/forbidden"));
      raw.close();
      assert.equal(raw.status, 403, raw.head);
      assert.doesNotMatch(raw.head, /x-breakwater-error/i);
    }
    // Still closed: a 4xx describes the request.
    const ok = await openClient(wsUrl(gw.port, "/ws/x/echo"));
    await ok.close();
    for (let i = 0; i < 2; i++) {
      const raw = await rawClient(gw.port, handshakeRequest("/ws/x/unavailable"));
      raw.close();
      assert.equal(raw.status, 503, raw.head);
      assert.doesNotMatch(raw.head, /x-breakwater-error/i);
    }
    await waitFor(async () => {
      const raw = await rawClient(gw.port, handshakeRequest("/ws/x/echo"));
      raw.close();
      return /x-breakwater-error: breaker_open/i.test(raw.head);
    }, { what: "the breaker open after two 503s" });
    assert.equal(upstream.refused, 6);
  } finally {
    await closeAll({ gw, upstream });
  }
});

Deno.test("an unreachable upstream is 502 and counted", async () => {
  const dead = startRawUpstream(() => Promise.resolve());
  const origin = dead.origin;
  await dead.close();
  const gw = await startTestGateway(chatConfig(origin, { breaker: { failureThreshold: 1 } }));
  try {
    const raw = await rawClient(gw.port, handshakeRequest("/ws/x/echo"));
    raw.close();
    assert.equal(raw.status, 502, raw.head);
    assert.match(raw.head, /x-breakwater-error: upstream_unreachable/i);
    await waitFor(async () => {
      const next = await rawClient(gw.port, handshakeRequest("/ws/x/echo"));
      next.close();
      return /x-breakwater-error: breaker_open/i.test(next.head);
    }, { what: "the breaker open after one connect failure" });
  } finally {
    await closeAll({ gw });
  }
});

Deno.test("an upstream that dies mid-session: the client sees the connection end; not counted", async () => {
  // A raw upstream: a correct handshake with a first frame in the same write (bytes the gateway
  // reads with the 101's head), one frame read, then the socket is closed.
  const upstream = startRawUpstream(async (conn) => {
    const buffer = new Uint8Array(8192);
    const head = await readUpgradeHead(conn);
    if (head === null) return;
    const switchHead = await switchFor(head);
    const first = new Uint8Array([0x81, 5, ...new TextEncoder().encode("first")]);
    const both = new Uint8Array(switchHead.length + first.length);
    both.set(switchHead);
    both.set(first, switchHead.length);
    await conn.write(both);
    await conn.read(buffer);
    conn.close();
  });
  const gw = await startTestGateway(
    chatConfig(upstream.origin, { breaker: { failureThreshold: 1, recoveryTimeoutMs: 60_000 } }),
  );
  const clients: TestClient[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      const client = await openClient(wsUrl(gw.port, "/ws/dies"));
      clients.push(client);
      assert.equal(await client.next(), "first");
      client.socket.send("anything");
      const closed = await client.waitClosed();
      // No close frame, as if connected directly: Deno's client reports code 0 there (a
      // browser 1006); neither a normal (1000) nor a gateway's (1001) close.
      assert.equal(closed.wasClean, false);
      assert.ok(closed.code !== 1000 && closed.code !== 1001, String(closed.code));
    }
    // Two sessions died after their 101s with threshold 1: the breaker is still closed.
    assert.equal(gw.gateway.breaker.view("chat").state, "closed");
    await waitFor(
      () => gw.logs.filter((line) => line.msg === "request" && line.status === 101).length === 2,
      { what: "two access log lines" },
    );
    const ending = gw.logs.find((line) => line.status === 101)!.websocket as Record<
      string,
      unknown
    >;
    assert.equal(ending.ending, "upstream_gone");
    assert.equal(ending.closeCode, null);
  } finally {
    for (const client of clients) await client.close();
    await closeAll({ gw, upstream });
  }
});

Deno.test("the idle timeout closes both sides with 1001", async () => {
  const upstream = startWebSocketUpstream();
  const gw = await startTestGateway(
    chatConfig(upstream.origin, { websocket: { idleTimeoutMs: 300 } }),
  );
  let client: TestClient | null = null;
  try {
    client = await openClient(wsUrl(gw.port, "/ws/quiet/echo"));
    const openedAt = performance.now();
    // Activity keeps it open past one idle period.
    for (let i = 0; i < 3; i++) {
      client.socket.send(`tick${i}`);
      assert.equal(await client.next(), `echo:tick${i}`);
      // The scenario's pacing (not a wait for a condition): half an idle period between ticks.
      await new Promise((resolve) => setTimeout(resolve, 150));
    }
    assert.equal(client.closed, null);
    const closed = await client.waitClosed(5000);
    assert.ok(performance.now() - openedAt >= 600);
    assert.equal(closed.code, 1001);
    assert.equal(closed.reason, "idle timeout");
    await waitFor(() => upstream.sessions[0].closed !== null, { what: "the upstream's close" });
    assert.deepEqual(upstream.sessions[0].closed, { code: 1001, reason: "idle timeout" });
  } finally {
    await client?.close();
    await closeAll({ gw, upstream });
  }
});

Deno.test("the cap: beyond websocket.maxConnections 503 pool_saturated; the gauge counts", async () => {
  const upstream = startWebSocketUpstream();
  const gw = await startTestGateway(
    chatConfig(upstream.origin, { websocket: { maxConnections: 2 } }),
  );
  const clients: TestClient[] = [];
  try {
    clients.push(await openClient(wsUrl(gw.port, "/ws/1/echo")));
    clients.push(await openClient(wsUrl(gw.port, "/ws/2/echo")));
    const refused = await rawClient(gw.port, handshakeRequest("/ws/3/echo"));
    refused.close();
    assert.equal(refused.status, 503, refused.head);
    assert.match(refused.head, /x-breakwater-error: pool_saturated/i);
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    assert.match(metrics, /breakwater_websocket_open\{[^}]*breakwater_service="chat"[^}]*\} 2/);

    await clients[0].close();
    await waitFor(async () => {
      const raw = await rawClient(gw.port, handshakeRequest("/ws/4/echo"));
      raw.close();
      return raw.status === 101;
    }, { what: "a slot free again after a close" });
  } finally {
    for (const client of clients) await client.close();
    await closeAll({ gw, upstream });
  }
});

Deno.test("websocket: false keeps today's behaviour: no 101, the request is forwarded plain", async () => {
  const upstream = startWebSocketUpstream();
  const gw = await startTestGateway(chatConfig(upstream.origin, { websocket: false }));
  try {
    const raw = await rawClient(gw.port, handshakeRequest("/ws/x/echo"));
    raw.close();
    assert.equal(raw.status, 200, raw.head);
    assert.equal(upstream.sessions.length, 0);
  } finally {
    await closeAll({ gw, upstream });
  }
});

Deno.test("a graceful server shutdown sends 1001 to both sides", async () => {
  const upstream = startWebSocketUpstream();
  const gw = await startTestGateway(chatConfig(upstream.origin));
  let client: TestClient | null = null;
  try {
    client = await openClient(wsUrl(gw.port, "/ws/s/echo"));
    client.socket.send("hi");
    assert.equal(await client.next(), "echo:hi");
    const closing = gw.close();
    const closed = await client.waitClosed();
    assert.equal(closed.code, 1001);
    await closing;
    await waitFor(() => upstream.sessions[0].closed !== null, { what: "the upstream's close" });
    assert.equal(upstream.sessions[0].closed?.code, 1001);
  } finally {
    await client?.close();
    await closeAll({ gw, upstream });
  }
});

Deno.test("embedded on Deno.serve: bridged message by message with Deno.upgradeWebSocket", async () => {
  const upstream = startWebSocketUpstream();
  const gw = await startTestGateway(chatConfig(upstream.origin));
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    gw.gateway.app.fetch,
  );
  const clients: TestClient[] = [];
  try {
    const url = wsUrl(server.addr.port, "/ws/embedded/echo");
    const first = await openClient(url);
    clients.push(first);
    first.socket.send("hello");
    assert.equal(await first.next(), "echo:hello");
    const big = new Uint8Array(3 * 1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = i & 0xff;
    first.socket.send(big);
    assert.deepEqual(await first.next(10_000), big);
    first.socket.close(4001, "client says bye");
    assert.equal((await first.waitClosed()).code, 4001);
    await waitFor(() => upstream.sessions[0]?.closed !== null, { what: "the upstream's close" });
    assert.deepEqual(upstream.sessions[0].closed, { code: 4001, reason: "client says bye" });

    const second = await openClient(url);
    clients.push(second);
    second.socket.send("close:4002:server says bye");
    const closed = await second.waitClosed();
    assert.deepEqual([closed.code, closed.reason], [4002, "server says bye"]);
    await waitFor(
      () => gw.logs.filter((line) => line.msg === "request" && line.status === 101).length === 2,
      { what: "two access log lines with status 101" },
    );
  } finally {
    for (const client of clients) await client.close();
    await server.shutdown();
    await closeAll({ gw, upstream });
  }
});

Deno.test("a shutdown that begins during the handshake still ends the session with 1001", async () => {
  let gotHead = false;
  const { promise: release, resolve: doRelease } = Promise.withResolvers<void>();
  const upstream = startRawUpstream(async (conn) => {
    const buffer = new Uint8Array(8192);
    const head = await readUpgradeHead(conn);
    if (head === null) return;
    gotHead = true;
    await release;
    await conn.write(await switchFor(head));
    // The gateway's close frame arrives; this upstream then just goes away.
    await conn.read(buffer);
  });
  const gw = await startTestGateway(chatConfig(upstream.origin));
  const connecting = rawClient(gw.port, handshakeRequest("/ws/late"));
  let closing: Promise<void> | null = null;
  try {
    await waitFor(() => gotHead, { what: "the upstream got the handshake" });
    closing = gw.close();
    doRelease();
    const raw = await connecting;
    try {
      assert.equal(raw.status, 101, raw.head);
      const close = await raw.frame();
      assert.equal(close?.opcode, OPCODE_CLOSE);
      assert.equal((close!.payload[0] << 8) | close!.payload[1], 1001);
    } finally {
      raw.close();
    }
    await closing;
  } finally {
    doRelease();
    await closing?.catch(() => {});
    await closeAll({ gw, upstream });
  }
});

Deno.test("backpressure: a client that does not read stalls the upstream's writes", async () => {
  const totalBytes = 96 * 1024 * 1024;
  let written = 0;
  let upstreamDone = false;
  // A raw upstream that sends one 96 MiB binary frame as fast as TCP lets it.
  const upstream = startRawUpstream(async (conn) => {
    const buffer = new Uint8Array(8192);
    const head = await readUpgradeHead(conn);
    if (head === null) return;
    await conn.write(await switchFor(head));
    const frameHead = new Uint8Array(10);
    frameHead[0] = 0x82;
    frameHead[1] = 127;
    new DataView(frameHead.buffer).setBigUint64(2, BigInt(totalBytes));
    await conn.write(frameHead);
    const chunk = new Uint8Array(256 * 1024);
    while (written < totalBytes) {
      written += await conn.write(chunk.subarray(0, Math.min(chunk.length, totalBytes - written)));
    }
    upstreamDone = true;
    await conn.read(buffer);
  });
  const gw = await startTestGateway(chatConfig(upstream.origin));
  const raw = await rawClient(gw.port, handshakeRequest("/ws/big"));
  try {
    assert.equal(raw.status, 101, raw.head);
    // Nothing is read: the upstream's writes stop once the socket buffers on the way are full
    // (the gateway holds one 64 KiB chunk, not the message).
    let last = -1;
    await waitFor(() => {
      const stalled = written === last && written > 0;
      last = written;
      return stalled;
    }, { intervalMs: 300, timeoutMs: 10_000, what: "the upstream's writes to stall" });
    assert.ok(!upstreamDone);
    assert.ok(written < 48 * 1024 * 1024, `${written} bytes written before any was read`);
    // Reading lets it all through.
    let received = raw.pending.length;
    const buffer = new Uint8Array(1024 * 1024);
    while (received < totalBytes + 10) {
      const n = await within(raw.conn.read(buffer), 5000, "the big frame's next bytes");
      if (n === null) break;
      received += n;
    }
    assert.equal(received, totalBytes + 10);
    await waitFor(() => upstreamDone, { what: "the upstream done writing" });
  } finally {
    raw.close();
    await closeAll({ gw, upstream });
  }
});

Deno.test("embedded: the upstream's ping answered, its death and the idle timeout reach the client", async () => {
  // A raw upstream: a ping right after its 101, then it waits for the pong and dies.
  let pongPayload = "";
  const upstream = startRawUpstream(async (conn) => {
    const buffer = new Uint8Array(8192);
    const head = await readUpgradeHead(conn);
    if (head === null) return;
    await conn.write(await switchFor(head));
    if (head.includes("/ping")) {
      await conn.write(new Uint8Array([0x89, 4, ...new TextEncoder().encode("ping")]));
      const n = await conn.read(buffer);
      // A masked pong (client role): opcode 0xA, mask bit, 4-byte key, payload.
      if (n !== null && (buffer[0] & 0x0f) === OPCODE_PONG) {
        const length = buffer[1] & 0x7f;
        const mask = buffer.subarray(2, 6);
        pongPayload = new TextDecoder().decode(
          buffer.subarray(6, 6 + length).map((byte, i) => byte ^ mask[i & 3]),
        );
      }
      return; // the socket is closed: the upstream died
    }
    await conn.read(buffer); // quiet until the gateway's close
  });
  const gw = await startTestGateway(
    chatConfig(upstream.origin, { websocket: { idleTimeoutMs: 300 } }),
  );
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    gw.gateway.app.fetch,
  );
  const clients: TestClient[] = [];
  try {
    const dying = await openClient(wsUrl(server.addr.port, "/ws/ping"));
    clients.push(dying);
    const died = await dying.waitClosed();
    assert.equal(pongPayload, "ping");
    assert.deepEqual([died.code, died.reason], [1000, "upstream connection ended"]);

    const quiet = await openClient(wsUrl(server.addr.port, "/ws/quiet"));
    clients.push(quiet);
    const idle = await quiet.waitClosed();
    assert.deepEqual([idle.code, idle.reason], [1000, "idle timeout"]);
  } finally {
    for (const client of clients) await client.close();
    await server.shutdown();
    await closeAll({ gw, upstream });
  }
});
