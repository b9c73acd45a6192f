/**
 * TLS to upstreams through both clients, as the gateway builds them (`createServiceClients`
 * with each service's `tls` block): a private CA trusted via `tls.caFile`, no CA (fails), mTLS
 * against `openssl s_server -Verify 1` (Deno's TLS listeners cannot require a client
 * certificate) with and without a client certificate, pooled TLS connections reused, and two
 * services with different TLS settings never sharing a connection. Also what loading the files
 * refuses. Certificates are made with `openssl` per run.
 */
import assert from "node:assert/strict";
import { ConfigError, parseConfig } from "../../src/config/schema.ts";
import { createServiceClients, type ServiceClientSpec } from "../../src/proxy/clients.ts";
import { UpstreamError, type UpstreamRequest } from "../../src/proxy/upstream_client.ts";
import { waitFor } from "../_helpers/wait.ts";
import { connectUpstream, readUpstreamTls } from "../../src/proxy/upstream_tls.ts";
import {
  makeUpstreamCerts,
  startMtlsUpstream,
  startOpensslUpstream,
  type UpstreamCerts,
} from "./_upstream_tls_certs.ts";

const KINDS = ["http1", "fetch"] as const;

function request(origin: string, pathAndQuery = "/"): UpstreamRequest {
  return {
    origin,
    pathAndQuery,
    method: "GET",
    headers: [],
    body: null,
    signal: AbortSignal.timeout(5000),
  };
}

function service(
  name: string,
  kind: "http1" | "fetch",
  upstream: string,
  tls: ServiceClientSpec["tls"],
): ServiceClientSpec {
  return {
    name,
    upstreamClient: kind,
    upstreams: [upstream],
    pool: { maxConnections: 4, idleTimeoutMs: 5000 },
    tls,
  };
}

const files = (certs: UpstreamCerts, mtls: boolean) => ({
  caFile: certs.caFile,
  certFile: mtls ? certs.clientCertFile : null,
  keyFile: mtls ? certs.clientKeyFile : null,
});

/** An https upstream on `Deno.serve` with the private CA's certificate; counts connections. */
function startTlsUpstream(certs: UpstreamCerts) {
  const ports = new Set<number>();
  const server = Deno.serve(
    {
      hostname: "127.0.0.1",
      port: 0,
      cert: certs.serverCert,
      key: certs.serverKey,
      onListen: () => {},
      // A refused handshake is what these tests provoke; it is not an error of the test.
      onError: () => new Response("error", { status: 500 }),
    },
    (req, info) => {
      ports.add(info.remoteAddr.port);
      return new Response(`tls ${new URL(req.url).pathname} host=${req.headers.get("host")}`);
    },
  );
  return {
    port: server.addr.port,
    connections: () => ports.size,
    close: () => server.shutdown(),
  };
}

let certs: UpstreamCerts;

Deno.test({
  name: "upstream TLS",
  fn: async (t) => {
    certs = await makeUpstreamCerts();
    try {
      await steps(t);
    } finally {
      await certs.remove();
    }
  },
});

async function steps(t: Deno.TestContext): Promise<void> {
  await t.step("readUpstreamTls reads, checks and hides the key from JSON", () => {
    const material = readUpstreamTls(files(certs, true), "services.s.tls");
    assert.deepEqual(material.caCerts, [certs.ca.trim()]);
    assert.equal(material.cert, certs.clientCert);
    assert.equal(material.key, certs.clientKey);
    assert.match(material.digest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(JSON.stringify({ material }), `{"material":"${material.digest}"}`);
    assert.ok(!JSON.stringify({ material }).includes("PRIVATE KEY"));
  });

  await t.step("readUpstreamTls names the field of each problem", async () => {
    const problems = (tls: Parameters<typeof readUpstreamTls>[0]) => {
      try {
        readUpstreamTls(tls, "services.s.tls");
      } catch (error) {
        assert.ok(error instanceof ConfigError);
        return error.problems.map((problem) => `${problem.path}: ${problem.message}`);
      }
      assert.fail("no ConfigError");
    };
    const missing = `${certs.dir}/missing.pem`;
    assert.deepEqual(problems({ caFile: missing, certFile: null, keyFile: null }), [
      `services.s.tls.caFile: cannot read ${missing}: file not found`,
    ]);
    assert.deepEqual(
      problems({ caFile: certs.serverKeyFile, certFile: null, keyFile: null }),
      ["services.s.tls.caFile: holds no PEM certificate (-----BEGIN CERTIFICATE-----)"],
    );
    assert.deepEqual(
      problems({ caFile: null, certFile: certs.clientCertFile, keyFile: certs.caFile }),
      ["services.s.tls.keyFile: holds no PEM private key"],
    );
    assert.deepEqual(
      problems({ caFile: null, certFile: certs.clientCertFile, keyFile: certs.serverKeyFile }),
      ["services.s.tls.keyFile: is not the private key of the first certificate in tls.certFile"],
    );
    const encrypted = `${certs.dir}/encrypted.key`;
    const made = new Deno.Command("openssl", {
      args: ["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout", "pass:secret"],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const writer = made.stdin.getWriter();
    await writer.write(new TextEncoder().encode(certs.clientKey));
    await writer.close();
    const output = await made.output();
    assert.ok(output.success, "openssl pkcs8 failed");
    Deno.writeFileSync(encrypted, output.stdout);
    assert.deepEqual(
      problems({ caFile: null, certFile: certs.clientCertFile, keyFile: encrypted }),
      ["services.s.tls.keyFile: is encrypted (a passphrase is not supported)"],
    );
  });

  await t.step("the schema: certFile and keyFile together; defaults merge key by key", () => {
    const base = { prefix: "/s", upstreams: ["https://127.0.0.1:1"] };
    assert.throws(
      () => parseConfig({ services: { s: { ...base, tls: { certFile: "c.pem" } } } }),
      (error: unknown) =>
        error instanceof ConfigError &&
        error.message === "services.s.tls.keyFile: tls.certFile needs tls.keyFile too",
    );
    assert.throws(
      () => parseConfig({ services: { s: { ...base, tls: { insecureSkipVerify: true } } } }),
      (error: unknown) =>
        error instanceof ConfigError &&
        error.message === "services.s.tls.insecureSkipVerify: unknown key",
    );
    const config = parseConfig({
      defaults: { tls: { caFile: "ca.pem" } },
      services: {
        s: { ...base, tls: { certFile: "c.pem", keyFile: "k.pem" } },
        plain: { prefix: "/p", upstreams: ["http://127.0.0.1:1"], tls: null },
        inherits: { prefix: "/i", upstreams: ["https://127.0.0.1:1"] },
      },
    });
    assert.deepEqual(config.services.s.tls, {
      caFile: "ca.pem",
      certFile: "c.pem",
      keyFile: "k.pem",
    });
    assert.equal(config.services.plain.tls, null);
    assert.deepEqual(config.services.inherits.tls, {
      caFile: "ca.pem",
      certFile: null,
      keyFile: null,
    });
  });

  await t.step(
    "connectUpstream: a certificate that does not verify fails the handshake",
    async () => {
      const upstream = startTlsUpstream(certs);
      try {
        await assert.rejects(
          connectUpstream(`https://127.0.0.1:${upstream.port}`, null),
          (error: unknown) =>
            error instanceof UpstreamError && error.kind === "unreachable" &&
            /^TLS handshake with 127\.0\.0\.1:\d+ failed: .*(UnknownIssuer|certificate)/i.test(
              error.message,
            ),
        );
        const conn = await connectUpstream(`https://localhost:${upstream.port}`, {
          caCerts: [certs.ca],
        });
        const info = await (conn as Deno.TlsConn).handshake();
        // Deno.serve offers h2 and http/1.1: the offer of http/1.1 alone keeps it on HTTP/1.1.
        assert.equal(info.alpnProtocol, "http/1.1");
        conn.close();
      } finally {
        await upstream.close();
      }
    },
  );

  await t.step("SNI: the URL's host name is sent, an IP literal never (RFC 6066 §3)", async () => {
    const upstream = await startOpensslUpstream(certs, ["-tlsextdebug"]);
    const sniLines = () => upstream.output().match(/TLS client extension "server name"/g) ?? [];
    try {
      for (const host of ["127.0.0.1", "localhost"]) {
        const clients = createServiceClients([
          service("s", "http1", `https://${host}:${upstream.port}`, files(certs, false)),
        ]);
        try {
          const response = await clients.clientFor("s").send(
            request(`https://${host}:${upstream.port}`),
          );
          assert.equal(response.status, 200);
          await response.text();
        } finally {
          clients.close();
        }
      }
      // Both handshakes printed (each lists its supported groups), then count the SNIs.
      await waitFor(
        () =>
          (upstream.output().match(/TLS client extension "supported_groups"/g) ?? []).length >= 2,
        { what: "s_server to print both handshakes" },
      );
      assert.equal(sniLines().length, 1, upstream.output());
      assert.match(upstream.output(), /"server name" \(id=0\), len=14/); // "localhost" + framing
    } finally {
      await upstream.close();
    }
  });

  await t.step("http1: streamed request bodies do not wait for delayed ACKs over TLS", async () => {
    // Nagle's algorithm holds a small write while an earlier one is unacknowledged, and the
    // upstream delays its ACK up to 40 ms on Linux (waiting for something to send). Measured
    // before the fixes: 43-47 ms for each small streamed POST below, 0.5-1.3 ms after.
    const upstream = startTlsUpstream(certs);
    const origin = `https://127.0.0.1:${upstream.port}`;
    const clients = createServiceClients([
      // Deno.connectTls (Nagle on): the head leaves with the body bytes already there.
      service("mtls", "http1", origin, files(certs, true)),
      // Deno.startTls over our TCP socket with Nagle off: every chunk leaves at once.
      service("plain", "http1", origin, files(certs, false)),
    ]);
    const post = async (name: string, chunks: readonly string[], declared: boolean) => {
      const length = chunks.join("").length;
      const response = await clients.clientFor(name).send({
        ...request(origin, "/upload"),
        method: "POST",
        headers: declared ? [["content-length", String(length)]] : [],
        body: new ReadableStream({
          start(controller) {
            for (const chunk of chunks) controller.enqueue(new TextEncoder().encode(chunk));
            controller.close();
          },
        }),
      });
      assert.equal(response.status, 200);
      await response.text();
    };
    try {
      const cases = [["mtls", ["hello"], true], ["plain", ["hel", "lo"], false]] as const;
      for (const [name, chunks, declared] of cases) {
        await post(name, chunks, declared); // the handshake, outside the measurement
        const startedMs = performance.now();
        for (let i = 0; i < 6; i++) await post(name, chunks, declared);
        const tookMs = performance.now() - startedMs;
        assert.ok(tookMs < 150, `${name}: 6 POSTs took ${tookMs.toFixed(0)} ms (Nagle: >= 240)`);
      }
      assert.equal(upstream.connections(), 2, "one pooled connection per service");
    } finally {
      clients.close();
      await upstream.close();
    }
  });

  for (const kind of KINDS) {
    await t.step(
      `${kind}: private CA trusted, one TLS connection for several requests`,
      async () => {
        const upstream = startTlsUpstream(certs);
        const clients = createServiceClients([
          service("s", kind, `https://127.0.0.1:${upstream.port}`, files(certs, false)),
          service("byName", kind, `https://localhost:${upstream.port}`, files(certs, false)),
        ]);
        try {
          for (let i = 0; i < 3; i++) {
            const response = await clients.clientFor("s").send(
              request(`https://127.0.0.1:${upstream.port}`, `/r${i}`),
            );
            assert.equal(response.status, 200);
            assert.equal(await response.text(), `tls /r${i} host=127.0.0.1:${upstream.port}`);
          }
          assert.equal(upstream.connections(), 1, "one TLS connection, reused");
          // SNI and verification by DNS name (the certificate names localhost too).
          const byName = await clients.clientFor("byName").send(
            request(`https://localhost:${upstream.port}`, "/n"),
          );
          assert.equal(await byName.text(), `tls /n host=localhost:${upstream.port}`);
        } finally {
          clients.close();
          await upstream.close();
        }
      },
    );

    await t.step(`${kind}: without the CA the upstream does not verify: unreachable`, async () => {
      const upstream = startTlsUpstream(certs);
      const origin = `https://127.0.0.1:${upstream.port}`;
      // Same origin, same kind: only the TLS settings differ. A shared pool would hand the
      // trusted service's verified connection to the other one.
      const clients = createServiceClients([
        service("trusted", kind, origin, files(certs, false)),
        service("untrusted", kind, origin, null),
      ]);
      try {
        assert.notEqual(clients.clientFor("trusted"), clients.clientFor("untrusted"));
        const ok = await clients.clientFor("trusted").send(request(origin, "/warm"));
        assert.equal(ok.status, 200);
        await ok.body?.cancel();
        await assert.rejects(
          clients.clientFor("untrusted").send(request(origin, "/x")),
          (error: unknown) => error instanceof UpstreamError && error.kind === "unreachable",
        );
        assert.equal(upstream.connections(), 1, "no request of the untrusted service arrived");
      } finally {
        clients.close();
        await upstream.close();
      }
    });

    await t.step(
      `${kind}: mTLS upstream: with the client certificate 200, without it fails`,
      async () => {
        const upstream = await startMtlsUpstream(certs);
        const clients = createServiceClients([
          service("mtls", kind, upstream.origin, files(certs, true)),
          service("nocert", kind, upstream.origin, files(certs, false)),
        ]);
        try {
          const response = await clients.clientFor("mtls").send(request(upstream.origin));
          assert.equal(response.status, 200);
          const page = await response.text();
          // s_server's status page shows the peer certificate it verified.
          assert.match(page, /breakwater-gateway/);
          await assert.rejects(
            clients.clientFor("nocert").send(request(upstream.origin)),
            (error: unknown) => error instanceof UpstreamError && error.kind === "unreachable",
          );
        } finally {
          clients.close();
          await upstream.close();
        }
      },
    );
  }
}
