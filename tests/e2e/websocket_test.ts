/**
 * WebSocket sessions through a gateway process: SIGTERM, after the drain delay, closes open
 * sessions with 1001 on both sides and the process still exits 0 (one worker and two), and
 * `wss://` through the TLS listener.
 */
import assert from "node:assert/strict";
import { startGatewayProcess } from "../_helpers/gateway.ts";
import { freePort } from "../_helpers/upstream.ts";
import { closeAll, waitFor, within } from "../_helpers/wait.ts";
import {
  handshakeRequest,
  openClient,
  startWebSocketUpstream,
  type TestClient,
} from "../proxy/websocket_helpers.ts";
import { createTestCa } from "./_tls_certs.ts";

Deno.test("SIGTERM: open WebSockets get 1001 after the drain delay, both sides", async () => {
  const upstream = startWebSocketUpstream();
  const drainDelayMs = 400;
  const gateway = await startGatewayProcess({
    // The single-threaded drain, on any host (the default "auto" runs workers where there are
    // cores: that drain is the next test's).
    workers: 1,
    shutdown: { drainDelayMs, timeoutMs: 5000 },
    services: { chat: { prefix: "/ws", upstreams: [upstream.origin] } },
  });
  const clients: TestClient[] = [];
  let stopped = false;
  try {
    const wsBase = gateway.url.replace("http://", "ws://");
    for (const room of ["a", "b"]) {
      const client = await openClient(`${wsBase}/ws/${room}/echo`);
      clients.push(client);
      client.socket.send(`hello ${room}`);
      assert.equal(await client.next(), `echo:hello ${room}`);
    }
    const signalledAt = performance.now();
    gateway.child.kill("SIGTERM");
    for (const client of clients) {
      const closed = await client.waitClosed(5000);
      assert.equal(closed.code, 1001);
      assert.equal(closed.reason, "going away");
    }
    // Not before the drain delay: load balancers get their time to see /readyz fail first.
    assert.ok(performance.now() - signalledAt >= drainDelayMs * 0.9);
    await waitFor(() => upstream.sessions.every((session) => session.closed !== null), {
      what: "both upstream sessions closed",
    });
    for (const session of upstream.sessions) assert.equal(session.closed?.code, 1001);
    const status = await within(gateway.stop(), 10_000, "the gateway's exit");
    stopped = true;
    assert.equal(status.code, 0);
    const requests = gateway.lines.filter((line) => line.msg === "request" && line.status === 101);
    assert.equal(requests.length, 2);
    for (const line of requests) {
      assert.equal((line.websocket as Record<string, unknown>).ending, "shutdown");
    }
  } finally {
    for (const client of clients) await client.close();
    if (!stopped) await gateway.stop("SIGKILL");
    await closeAll({ upstream });
  }
});

Deno.test("with two workers: sessions through both, SIGTERM closes them with 1001", async () => {
  const upstream = startWebSocketUpstream();
  const gateway = await startGatewayProcess({
    workers: 2,
    shutdown: { drainDelayMs: 100, timeoutMs: 5000 },
    services: { chat: { prefix: "/ws", upstreams: [upstream.origin] } },
  });
  const clients: TestClient[] = [];
  let stopped = false;
  try {
    const wsBase = gateway.url.replace("http://", "ws://");
    for (let i = 0; i < 6; i++) {
      const client = await openClient(`${wsBase}/ws/${i}/echo`);
      clients.push(client);
      client.socket.send(`n${i}`);
      assert.equal(await client.next(), `echo:n${i}`);
    }
    gateway.child.kill("SIGTERM");
    for (const client of clients) assert.equal((await client.waitClosed(8000)).code, 1001);
    const status = await within(gateway.stop(), 15_000, "the gateway's exit");
    stopped = true;
    assert.equal(status.code, 0);
    // A worker reports drained only after its sessions' ends were recorded: no line is lost
    // when the main thread ends the workers.
    const requests = gateway.lines.filter((line) => line.msg === "request" && line.status === 101);
    assert.equal(requests.length, 6);
    for (const line of requests) {
      assert.equal((line.websocket as Record<string, unknown>).ending, "shutdown");
    }
  } finally {
    for (const client of clients) await client.close();
    if (!stopped) await gateway.stop("SIGKILL");
    await closeAll({ upstream });
  }
});

Deno.test("wss:// on the TLS listener (http/1.1 by ALPN) is proxied too", async () => {
  const ca = await createTestCa();
  const upstream = startWebSocketUpstream();
  let gateway: Awaited<ReturnType<typeof startGatewayProcess>> | null = null;
  let conn: Deno.TlsConn | null = null;
  try {
    const leaf = await ca.issue("localhost");
    const tlsPort = freePort();
    gateway = await startGatewayProcess({
      listen: {
        hostname: "127.0.0.1",
        port: 0,
        tls: { certFile: leaf.certFile, keyFile: leaf.keyFile, port: tlsPort },
      },
      services: { chat: { prefix: "/ws", upstreams: [upstream.origin] } },
    });
    conn = await Deno.connectTls({
      hostname: "localhost",
      port: tlsPort,
      caCerts: [await Deno.readTextFile(ca.caFile)],
      alpnProtocols: ["http/1.1"],
    });
    await conn.write(new TextEncoder().encode(handshakeRequest("/ws/tls/echo")));
    const buffer = new Uint8Array(8192);
    let received = new Uint8Array(0);
    const readMore = async () => {
      const n = await within(conn!.read(buffer), 5000, "bytes over TLS");
      if (n === null) throw new Error("the gateway closed the TLS connection");
      const joined = new Uint8Array(received.length + n);
      joined.set(received);
      joined.set(buffer.subarray(0, n), received.length);
      received = joined;
    };
    while (!new TextDecoder().decode(received).includes("\r\n\r\n")) await readMore();
    const text = new TextDecoder().decode(received);
    assert.match(text, /^HTTP\/1\.1 101 /);
    received = received.slice(text.indexOf("\r\n\r\n") + 4);
    // A masked text frame "hi" (RFC 6455 §5.3), then the echo comes back unmasked.
    const key = [9, 8, 7, 6];
    const payload = new TextEncoder().encode("hi");
    await conn.write(
      new Uint8Array([0x81, 0x80 | 2, ...key, payload[0] ^ key[0], payload[1] ^ key[1]]),
    );
    while (received.length < 2 || received.length < 2 + received[1]) await readMore();
    assert.equal(received[0], 0x81);
    assert.equal(new TextDecoder().decode(received.subarray(2, 2 + received[1])), "echo:hi");
    assert.equal(upstream.sessions[0].headers.get("x-forwarded-proto"), "https");
  } finally {
    conn?.close();
    await gateway?.stop();
    await closeAll({ upstream });
    await ca.remove();
  }
});
