/** The opening handshake as the gateway checks and rewrites it (RFC 6455 §4). */
import assert from "node:assert/strict";
import {
  acceptFor,
  clientSwitchHead,
  handshakeProblem,
  switchProblem,
  upstreamHandshake,
  wantsWebSocket,
} from "../../src/proxy/websocket_handshake.ts";

const KEY = "dGhlIHNhbXBsZSBub25jZQ==";
const valid = () =>
  new Headers({
    upgrade: "websocket",
    connection: "keep-alive, Upgrade",
    "sec-websocket-key": KEY,
    "sec-websocket-version": "13",
  });

Deno.test("acceptFor: the example of RFC 6455 §1.3", async () => {
  assert.equal(await acceptFor(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
});

Deno.test("wantsWebSocket needs Upgrade: websocket listed in Connection", () => {
  assert.equal(wantsWebSocket(valid()), true);
  assert.equal(wantsWebSocket(new Headers({ upgrade: "WebSocket", connection: "upgrade" })), true);
  assert.equal(wantsWebSocket(new Headers({ upgrade: "websocket" })), false);
  assert.equal(wantsWebSocket(new Headers({ upgrade: "h2c", connection: "Upgrade" })), false);
});

Deno.test("handshakeProblem: GET, version 13, a 16-byte key, no body", () => {
  assert.equal(handshakeProblem("GET", valid()), null);
  assert.match(handshakeProblem("POST", valid())!, /must be GET/);
  const version = valid();
  version.set("sec-websocket-version", "8");
  assert.match(handshakeProblem("GET", version)!, /Version must be 13/);
  for (const key of ["", "abc", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==", "dGhlIHNhbXBsZSBub25jZQ="]) {
    const headers = valid();
    headers.set("sec-websocket-key", key);
    assert.match(handshakeProblem("GET", headers)!, /Sec-WebSocket-Key/, key);
  }
  const body = valid();
  body.set("content-length", "5");
  assert.match(handshakeProblem("GET", body)!, /no body/);
});

Deno.test("upstreamHandshake: Host of the upstream, Upgrade/Connection for this hop", () => {
  const text = new TextDecoder().decode(
    upstreamHandshake("/chat?room=1", "10.0.0.1:9000", [["sec-websocket-key", KEY]]),
  );
  assert.equal(
    text,
    "GET /chat?room=1 HTTP/1.1\r\nhost: 10.0.0.1:9000\r\nsec-websocket-key: " + KEY +
      "\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n",
  );
});

Deno.test("switchProblem and clientSwitchHead", async () => {
  const accept = await acceptFor(KEY);
  const ok: [string, string][] = [
    ["Upgrade", "websocket"],
    ["Connection", "Upgrade, X-Secret"],
    ["Sec-WebSocket-Accept", accept],
    ["X-Secret", "hop"],
    ["Keep-Alive", "timeout=5"],
    ["Sec-WebSocket-Protocol", "chat"],
    ["Via", "1.1 inner"],
  ];
  assert.equal(switchProblem(ok, accept), null);
  assert.match(switchProblem(ok, "wrong")!, /Accept/);
  assert.match(switchProblem([["Connection", "upgrade"]], accept)!, /not to websocket/);
  const head = new TextDecoder().decode(clientSwitchHead(ok, "rid-1"));
  assert.ok(head.startsWith("HTTP/1.1 101 Switching Protocols\r\n"));
  assert.ok(head.endsWith("\r\n\r\n"));
  assert.match(head, /Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r\n/);
  assert.match(head, /Sec-WebSocket-Protocol: chat\r\n/);
  assert.match(head, /via: 1\.1 inner, 1\.1 breakwater\r\n/);
  assert.match(head, /x-request-id: rid-1\r\n/);
  assert.doesNotMatch(head, /X-Secret|Keep-Alive/i);
  assert.equal(head.match(/^upgrade:/gim)?.length, 1);
});
