/**
 * `websocket.maxConnectionsPerClient`: one client address cannot hold every slot of a
 * service's `websocket.maxConnections`. Real sockets through a real gateway to a real
 * `Deno.upgradeWebSocket` upstream.
 *
 * How the client's address is taken: the gateway's own HTTP/1.1 server passes the accepted
 * socket's peer address (`Deno.Conn.remoteAddr`) to the request path, which uses it for
 * `X-Forwarded-For` and for this bound; a client's own `X-Forwarded-For` is appended to, never
 * believed. To have two client addresses on one machine, the public port here listens on `::`
 * (dual stack): a connection to 127.0.0.1 arrives from `::ffff:127.0.0.1`, one to `::1` from
 * `::1`.
 */
import assert from "node:assert/strict";
import { ConfigError, parseConfig } from "../../src/config/schema.ts";
import { serveHttp1 } from "../../src/server/http1_server.ts";
import { startTestGateway } from "../_helpers/gateway.ts";
import { closeAll, waitFor } from "../_helpers/wait.ts";
import {
  handshakeRequest,
  openClient,
  rawClient,
  startWebSocketUpstream,
  type TestClient,
} from "./websocket_helpers.ts";

Deno.test("websocket.maxConnectionsPerClient: default 100, a positive whole number", () => {
  const service = (websocket: unknown) => ({
    services: { chat: { prefix: "/ws", upstreams: ["http://127.0.0.1:1"], websocket } },
  });
  assert.equal(parseConfig(service({})).services.chat.websocket.maxConnectionsPerClient, 100);
  assert.equal(
    parseConfig(service({ maxConnectionsPerClient: 3 })).services.chat.websocket
      .maxConnectionsPerClient,
    3,
  );
  assert.throws(
    () => parseConfig(service({ maxConnectionsPerClient: 0 })),
    (error) => error instanceof ConfigError && /maxConnectionsPerClient/.test(error.message),
  );
});

Deno.test("one client address gets at most maxConnectionsPerClient sessions; others still get theirs", async () => {
  const upstream = startWebSocketUpstream();
  const gw = await startTestGateway({
    services: {
      chat: {
        prefix: "/ws",
        upstreams: [upstream.origin],
        websocket: { maxConnections: 10, maxConnectionsPerClient: 2 },
      },
    },
  });
  // The public port on both address families, served by the gateway's own server.
  const server = serveHttp1({ hostname: "::", port: 0 }, gw.gateway.app.fetch);
  const port = server.addr.port;
  const clients: TestClient[] = [];
  try {
    clients.push(await openClient(`ws://127.0.0.1:${port}/ws/a/echo`));
    clients.push(await openClient(`ws://127.0.0.1:${port}/ws/b/echo`));

    // The third from the same address: refused as the cap refuses, whatever X-Forwarded-For
    // claims, and the upstream never sees it.
    const refused = await rawClient(
      port,
      handshakeRequest("/ws/c/echo", { extra: "X-Forwarded-For: 203.0.113.9\r\n" }),
    );
    const body = await refused.readUntil(/\}\s*$/);
    refused.close();
    assert.equal(refused.status, 503, refused.head);
    assert.match(refused.head, /x-breakwater-error: pool_saturated/i);
    assert.match(body, /websocket\.maxConnectionsPerClient/);
    assert.match(body, /from ::ffff:127\.0\.0\.1/);
    assert.equal(upstream.sessions.length, 2, "the refused handshake never reached the upstream");

    // Another address still gets a session: the service's cap (10) is not reached.
    const other = await openClient(`ws://[::1]:${port}/ws/d/echo`);
    clients.push(other);
    other.socket.send("hi");
    assert.equal(await other.next(), "echo:hi");
    assert.equal(upstream.sessions.length, 3);

    // Nothing counted against the upstream for the refusal.
    const breakers = await (await fetch(`${gw.adminUrl}/admin/breakers`)).json();
    const chat = breakers.services.find((view: { service: string }) => view.service === "chat");
    assert.deepEqual([chat.state, chat.failuresInWindow], ["closed", 0]);
    assert.equal(chat.upstreams[0].failuresInARow, 0);

    // A session closed gives the address its slot back.
    await clients[0].close();
    await waitFor(async () => {
      const again = await rawClient(port, handshakeRequest("/ws/e/echo"));
      again.close();
      return again.status === 101;
    }, { what: "a slot of 127.0.0.1 free again after its close" });
  } finally {
    for (const client of clients) await client.close();
    await server.shutdown();
    await closeAll({ gw, upstream });
  }
});
