/**
 * Interim (1xx) responses in the HTTP/1.1 upstream client, against raw TCP upstreams: each one
 * goes to `onInformational` as it comes (before the final head is even sent), `100 Continue`
 * does not, and an upstream sending too many or too large ones fails the attempt.
 */
import assert from "node:assert/strict";
import { createHttp1Client } from "../../src/proxy/http1_client.ts";
import { UpstreamError } from "../../src/proxy/upstream_client.ts";
import { readRequestHead, startRawUpstream } from "../_helpers/upstream.ts";
import { within } from "../_helpers/wait.ts";

const encoder = new TextEncoder();

function newClient() {
  return createHttp1Client(() => ({ maxIdlePerHost: 8, idleTimeoutMs: 5000 }));
}

type Interim = [number, [string, string][]];

function request(origin: string, seen: Interim[], onSeen: () => void = () => {}) {
  return {
    origin,
    pathAndQuery: "/x",
    method: "GET",
    headers: [] as [string, string][],
    body: null,
    signal: AbortSignal.timeout(10_000),
    onInformational: (status: number, fields: [string, string][]) => {
      seen.push([status, fields]);
      onSeen();
    },
  };
}

/** An upstream that writes `interim`, then `final` once `release` settles. */
function staged(interim: string, release: Promise<unknown>, final: string) {
  return startRawUpstream(async (conn) => {
    await readRequestHead(conn);
    await conn.write(encoder.encode(interim));
    await release;
    await conn.write(encoder.encode(final));
  });
}

async function expectUnreachable(promise: Promise<unknown>, message: RegExp) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof UpstreamError, String(error));
    assert.equal(error.kind, "unreachable");
    assert.match(String(error.message) + String(error.cause), message);
    return true;
  });
}

Deno.test("a 103 reaches onInformational before the final head is sent", async () => {
  const seen: Interim[] = [];
  const { promise: hinted, resolve } = Promise.withResolvers<void>();
  // The upstream holds its 200 back until the client reported the 103: a client that held
  // interim heads until the final one would time out here.
  const upstream = staged(
    "HTTP/1.1 100 Continue\r\n\r\n" +
      "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nLink: </a.js>\r\n\r\n",
    within(hinted, 5000, "the 103 reported"),
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
  );
  const client = newClient();
  try {
    const response = await within(
      client.send(request(upstream.origin, seen, resolve)),
      5000,
      "the final response",
    );
    assert.deepEqual(seen, [[103, [["Link", "</style.css>; rel=preload"], ["Link", "</a.js>"]]]]);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("link"), null, "hints are not merged into the final head");
    assert.equal(await response.text(), "ok");
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("16 interim responses pass; a 17th fails the attempt", async () => {
  const hint = "HTTP/1.1 103 Early Hints\r\nLink: </h>\r\n\r\n";
  const final = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  const sixteen = staged(hint.repeat(16), Promise.resolve(), final);
  const client = newClient();
  try {
    const seen: Interim[] = [];
    const response = await client.send(request(sixteen.origin, seen));
    assert.equal(response.status, 200);
    assert.equal(seen.length, 16);
  } finally {
    client.close();
    await sixteen.close();
  }
  const twenty = staged(hint.repeat(20), Promise.resolve(), final);
  const other = newClient();
  try {
    const seen: Interim[] = [];
    await expectUnreachable(other.send(request(twenty.origin, seen)), /too many 1xx/);
    assert.equal(seen.length, 16);
    assert.equal(other.openConnections(), 0);
  } finally {
    other.close();
    await twenty.close();
  }
});

Deno.test("interim heads count against the 64 KiB head limit with the final head", async () => {
  const big = (n: number) => `HTTP/1.1 103 Early Hints\r\nLink: </${"a".repeat(n)}>\r\n\r\n`;
  const final = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  // Each head alone is well under 64 KiB; together they are over.
  const upstream = staged(
    big(30 * 1024) + big(30 * 1024),
    Promise.resolve(),
    big(8 * 1024) + final,
  );
  const client = newClient();
  try {
    const seen: Interim[] = [];
    await expectUnreachable(client.send(request(upstream.origin, seen)), /over 64 KiB/);
    assert.equal(seen.length, 2);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("a 101 among interim responses still fails the attempt", async () => {
  const upstream = staged(
    "HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
    Promise.resolve(),
    "",
  );
  const client = newClient();
  try {
    const seen: Interim[] = [];
    await expectUnreachable(client.send(request(upstream.origin, seen)), /101/);
    assert.deepEqual(seen, [[103, []]]);
  } finally {
    client.close();
    await upstream.close();
  }
});
