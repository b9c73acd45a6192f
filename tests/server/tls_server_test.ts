/**
 * `serveTls` in this process, with Deno's own TLS client: ALPN picks h2 or http/1.1, the
 * handler learns the client's address and `https`, the loopback HTTP/2 port refuses what did
 * not come through TLS, the connection cap holds, a swapped certificate serves new
 * connections only, and shutdown leaves nothing open (resource sanitizers on).
 *
 * @module
 */
import assert from "node:assert/strict";
import { checkCertificatePair, serveTls, type TlsServeInfo } from "../../src/server/tls_server.ts";
import { findClientError } from "../../src/proxy/client_error.ts";
import { waitFor, within } from "../_helpers/wait.ts";
import { createTestCa, type TestCa } from "../e2e/_tls_certs.ts";

let ca: TestCa;

async function pairOf(commonName: string) {
  const files = await ca.issue(commonName);
  return {
    cert: await Deno.readTextFile(files.certFile),
    key: await Deno.readTextFile(files.keyFile),
  };
}

/** One request over a fresh TLS connection, ALPN `protocols`; the raw answer. */
async function rawRequest(port: number, protocols: string[], caCert: string): Promise<string> {
  const conn = await Deno.connectTls({
    hostname: "localhost",
    port,
    caCerts: [caCert],
    alpnProtocols: protocols,
  });
  try {
    await conn.write(
      new TextEncoder().encode("GET /p?q HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    );
    return await within(new Response(conn.readable).text(), 5000, "answer");
  } finally {
    try {
      conn.close();
    } catch {
      // closed by reading to the end
    }
  }
}

Deno.test("serveTls", async (t) => {
  ca = await createTestCa();
  const caCert = await Deno.readTextFile(ca.caFile);
  try {
    const first = await pairOf("first");
    const seen: TlsServeInfo[] = [];
    const server = serveTls(
      { hostname: "127.0.0.1", port: 0, ...first },
      (request, info) => {
        seen.push(info);
        return new Response(`${info.protocol} ${new URL(request.url).pathname}`);
      },
    );
    const client = Deno.createHttpClient({ caCerts: [caCert] });
    try {
      await t.step("h2 by ALPN through fetch; http/1.1 by ALPN to the own server", async () => {
        const response = await fetch(`https://localhost:${server.addr.port}/a`, { client });
        assert.equal(await response.text(), "h2 /a");
        const h2 = seen.at(-1)!;
        assert.equal(h2.scheme, "https");
        assert.equal(h2.remoteAddr.hostname, "127.0.0.1");
        assert.notEqual(h2.remoteAddr.port, server.addr.port);

        const raw = await rawRequest(server.addr.port, ["http/1.1"], caCert);
        assert.match(raw, /^HTTP\/1\.1 200 /);
        assert.match(raw, /http\/1\.1 \/p$/);
        assert.equal(seen.at(-1)!.target, "/p?q");
        // No ALPN at all: HTTP/1.1.
        assert.match(await rawRequest(server.addr.port, [], caCert), /http\/1\.1 \/p$/);
      });

      await t.step(
        "a swapped certificate serves new connections; a bad one is refused",
        async () => {
          // Signed by another CA: a client that trusts only that CA proves which one it got.
          const otherCa = await createTestCa();
          try {
            const leaf = await otherCa.issue("second");
            const second = {
              cert: await Deno.readTextFile(leaf.certFile),
              key: await Deno.readTextFile(leaf.keyFile),
            };
            const otherCaCert = await Deno.readTextFile(otherCa.caFile);
            assert.throws(() => server.setCertificate({ cert: second.cert, key: first.key }));
            assert.equal(
              server.setCertificate(first),
              false,
              "the pair already served: nothing to do",
            );
            assert.equal(server.setCertificate(second), true);
            // A connection in the very instant the old listener closes may be reset
            // (SO_REUSEPORT); the next ones are all served the new certificate.
            await waitFor(async () => {
              try {
                const conn = await Deno.connectTls({
                  hostname: "localhost",
                  port: server.addr.port,
                  caCerts: [otherCaCert],
                });
                try {
                  await conn.handshake();
                  return true;
                } finally {
                  conn.close();
                }
              } catch (error) {
                if (error instanceof Deno.errors.ConnectionReset) return false;
                throw error;
              }
            }, { what: "a handshake with the new certificate" });
            const otherClient = Deno.createHttpClient({ caCerts: [otherCaCert] });
            try {
              const response = await fetch(`https://localhost:${server.addr.port}/b`, {
                client: otherClient,
              });
              assert.equal(await response.text(), "h2 /b");
            } finally {
              otherClient.close();
            }
            // The connection fetch pooled before the swap still works, on the old certificate.
            const pooled = await fetch(`https://localhost:${server.addr.port}/c`, { client });
            assert.equal(await pooled.text(), "h2 /c");
          } finally {
            await otherCa.remove();
          }
        },
      );
    } finally {
      client.close();
      await within(server.shutdown(), 10_000, "shutdown");
    }
    assert.equal(server.connections(), 0);
  } finally {
    await ca.remove();
  }
});

Deno.test("serveTls: http2 false offers http/1.1 only", async () => {
  ca = await createTestCa();
  const caCert = await Deno.readTextFile(ca.caFile);
  const server = serveTls(
    { hostname: "127.0.0.1", port: 0, ...(await pairOf("h1")), http2: false },
    (_request, info) => new Response(info.protocol),
  );
  const client = Deno.createHttpClient({ caCerts: [caCert] });
  try {
    const response = await fetch(`https://localhost:${server.addr.port}/`, { client });
    assert.equal(await response.text(), "http/1.1");
    // A client that offers h2 alone is refused in the handshake (RFC 7301 §3.2).
    const conn = await Deno.connectTls({
      hostname: "localhost",
      port: server.addr.port,
      caCerts: [caCert],
      alpnProtocols: ["h2"],
    });
    try {
      await assert.rejects(conn.handshake(), /NoApplicationProtocol/);
    } finally {
      conn.close();
    }
  } finally {
    client.close();
    await within(server.shutdown(), 10_000, "shutdown");
    await ca.remove();
  }
});

Deno.test("serveTls: an h2 upload that stalls errors after bodyIdleTimeoutMs; a flowing one does not", async () => {
  ca = await createTestCa();
  const caCert = await Deno.readTextFile(ca.caFile);
  const server = serveTls(
    { hostname: "127.0.0.1", port: 0, ...(await pairOf("h2-upload")), bodyIdleTimeoutMs: 300 },
    async (request, info) => {
      try {
        const bytes = await new Response(request.body).arrayBuffer();
        return new Response(`${info.protocol} ${bytes.byteLength}`);
      } catch (error) {
        return new Response(findClientError(error)?.code ?? String(error), { status: 408 });
      }
    },
  );
  const client = Deno.createHttpClient({ caCerts: [caCert] });
  let stop!: () => void;
  const stopped = new Promise<void>((resolve) => stop = resolve);
  try {
    // 200 chunks, each well inside the bound: nothing is cut.
    let left = 200;
    const flowing = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (left-- > 0) controller.enqueue(new Uint8Array(100));
        else controller.close();
      },
    });
    const ok = await fetch(`https://localhost:${server.addr.port}/up`, {
      client,
      method: "POST",
      body: flowing,
      signal: AbortSignal.timeout(5000),
    });
    assert.equal(await ok.text(), "h2 20000");

    // One chunk, then nothing until the test ends: the server gives up after ~300 ms.
    let sent = false;
    const stalling = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (!sent) {
          sent = true;
          controller.enqueue(new Uint8Array(10));
          return;
        }
        await stopped;
        controller.close();
      },
    });
    const startedAt = performance.now();
    const cut = await fetch(`https://localhost:${server.addr.port}/up`, {
      client,
      method: "POST",
      body: stalling,
      signal: AbortSignal.timeout(5000),
    });
    assert.equal(cut.status, 408);
    assert.equal(await cut.text(), "request_timeout");
    assert.ok(performance.now() - startedAt >= 300, "not before bodyIdleTimeoutMs");
  } finally {
    stop();
    client.close();
    await within(server.shutdown(), 10_000, "shutdown");
    await ca.remove();
  }
});

Deno.test("serveTls: a connection beyond maxConnections is closed at once", async () => {
  ca = await createTestCa();
  const caCert = await Deno.readTextFile(ca.caFile);
  const server = serveTls(
    { hostname: "127.0.0.1", port: 0, ...(await pairOf("cap")), maxConnections: 1 },
    () => new Response("ok"),
  );
  const connect = () =>
    Deno.connectTls({ hostname: "localhost", port: server.addr.port, caCerts: [caCert] });
  const held = await connect();
  try {
    await held.handshake();
    const extra = await connect();
    try {
      const refused = await within(
        extra.handshake().then(() => extra.read(new Uint8Array(1))).then(
          (n) => n === null,
          () => true,
        ),
        5000,
        "the extra connection closed",
      );
      assert.ok(refused);
    } finally {
      try {
        extra.close();
      } catch {
        // closed
      }
    }
  } finally {
    held.close();
    await within(server.shutdown(), 10_000, "shutdown");
    await ca.remove();
  }
});

Deno.test("checkCertificatePair: rustls' verdict on a pair", async () => {
  ca = await createTestCa();
  try {
    const pair = await pairOf("check");
    checkCertificatePair(pair);
    assert.throws(
      () => checkCertificatePair({ cert: pair.cert, key: Deno.readTextFileSync(ca.strayKeyFile) }),
      /KeyMismatch|consistent/,
    );
    assert.throws(() => checkCertificatePair({ cert: "x", key: pair.key }));
  } finally {
    await ca.remove();
  }
});
