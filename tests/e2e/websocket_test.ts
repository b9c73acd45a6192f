/**
 * WebSocket sessions through a gateway process: SIGTERM, after the drain delay, closes open
 * sessions with 1001 on both sides, and the process still exits 0.
 */
import assert from "node:assert/strict";
import { startGatewayProcess } from "../_helpers/gateway.ts";
import { closeAll, waitFor, within } from "../_helpers/wait.ts";
import { openClient, startWebSocketUpstream, type TestClient } from "../proxy/websocket_helpers.ts";

Deno.test("SIGTERM: open WebSockets get 1001 after the drain delay, both sides", async () => {
  const upstream = startWebSocketUpstream();
  const drainDelayMs = 400;
  const gateway = await startGatewayProcess({
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
  } finally {
    for (const client of clients) await client.close();
    if (!stopped) await gateway.stop("SIGKILL");
    await closeAll({ upstream });
  }
});
