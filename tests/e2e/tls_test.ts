/**
 * HTTPS on the public listener, end to end through a gateway process: certificates made with
 * openssl in the test (a CA and leaves for localhost/127.0.0.1), curl over `--http2` and
 * `--http1.1`, `X-Forwarded-Proto: https` upstream, the plain port's redirect, a certificate
 * swapped and reloaded (SIGHUP) while long streaming requests are in flight, start-up refusals
 * naming the field (exit 2), handshake and head timeouts, and an HTTP/2 rapid-reset burst
 * written frame by frame that leaves the gateway serving others with no breaker moved.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  type GatewayProcess,
  runGatewayExpectingExit,
  startGatewayProcess,
} from "../_helpers/gateway.ts";
import { concatBytes, H2_PREFACE, h2Frame, hpackLiterals } from "../_helpers/h2_frames.ts";
import { startUpstream } from "../_helpers/upstream.ts";
import { bounded, waitFor, within } from "../_helpers/wait.ts";
import { createTestCa, type ServerCertFiles, type TestCa } from "./_tls_certs.ts";

const decoder = new TextDecoder();

/** The TLS port from the gateway's `listening` line. */
function tlsPortOf(gateway: GatewayProcess): number {
  const line = gateway.lines.find((l) => l.msg === "listening")!;
  return line.tlsPort as number;
}

async function curl(
  args: string[],
  timeoutMs = 10_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command("curl", {
    args: ["-sS", "--max-time", String(timeoutMs / 1000), ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** The serial of the certificate a new connection to `port` is served (openssl s_client). */
async function servedSerial(port: number, caFile: string): Promise<string> {
  const client = new Deno.Command("openssl", {
    args: [
      "s_client",
      "-connect",
      `127.0.0.1:${port}`,
      "-servername",
      "localhost",
      "-CAfile",
      caFile,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  await client.stdin.close();
  const output = await within(client.output(), 10_000, "openssl s_client");
  const pem = decoder.decode(output.stdout).match(
    /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/,
  );
  assert.ok(pem, `s_client printed a certificate: ${decoder.decode(output.stderr)}`);
  const x509 = new Deno.Command("openssl", {
    args: ["x509", "-noout", "-serial"],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const writer = x509.stdin.getWriter();
  await writer.write(new TextEncoder().encode(pem[0]));
  await writer.close();
  const serial = await within(x509.output(), 10_000, "openssl x509");
  return decoder.decode(serial.stdout).trim().replace(/^serial=/, "");
}

async function withCa(run: (ca: TestCa, leaf: ServerCertFiles) => Promise<void>): Promise<void> {
  const ca = await createTestCa();
  try {
    await run(ca, await ca.issue("breakwater-one"));
  } finally {
    await ca.remove();
  }
}

Deno.test("tls: curl over --http2 and --http1.1 reaches the upstream with X-Forwarded-Proto https; the plain port redirects with 308", async () => {
  await withCa(async (ca, leaf) => {
    const targets: string[] = [];
    const upstream = startUpstream((request) => {
      const url = new URL(request.url);
      targets.push(url.pathname + url.search);
      return new Response(`proto=${request.headers.get("x-forwarded-proto")}`);
    });
    const gateway = await startGatewayProcess({
      listen: {
        hostname: "127.0.0.1",
        port: 0,
        tls: { certFile: leaf.certFile, keyFile: leaf.keyFile, port: 0 },
        redirectToHttps: true,
      },
      services: { api: { prefix: "/api", upstreams: [upstream.origin] } },
    });
    try {
      const tlsPort = tlsPortOf(gateway);
      for (const [flag, version] of [["--http2", "2"], ["--http1.1", "1.1"]]) {
        const result = await curl([
          flag,
          "--cacert",
          ca.caFile,
          "-w",
          " version=%{http_version} status=%{http_code}",
          `https://localhost:${tlsPort}/api/x?q=1`,
        ]);
        assert.equal(result.code, 0, result.stderr);
        assert.equal(result.stdout, `proto=https version=${version} status=200`);
      }
      assert.deepEqual(targets, ["/api/x?q=1", "/api/x?q=1"]);

      // Plain HTTP: a 308 to the same target on the TLS port, health routes answered as is.
      const plain = gateway.url;
      const redirect = await fetch(`${plain}/api/x?q=1`, bounded({ redirect: "manual" }));
      await redirect.body?.cancel();
      assert.equal(redirect.status, 308);
      assert.equal(redirect.headers.get("location"), `https://127.0.0.1:${tlsPort}/api/x?q=1`);
      const health = await fetch(`${plain}/healthz`, bounded());
      assert.equal(health.status, 200);
      await health.body?.cancel();
      // curl follows it to the TLS port, with the Host it used (never one it did not).
      const followed = await curl([
        "-L",
        "--cacert",
        ca.caFile,
        `http://localhost:${new URL(plain).port}/api/y`,
      ]);
      assert.equal(followed.stdout, "proto=https");

      // A hostile Host is never reflected into the redirect.
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(plain).port) });
      try {
        await conn.write(
          new TextEncoder().encode(
            "GET /api/x HTTP/1.1\r\nHost: evil.example/x#\r\nConnection: close\r\n\r\n",
          ),
        );
        const answer = await within(new Response(conn.readable).text(), 5000, "plain answer");
        assert.match(answer, /^HTTP\/1\.1 400 /);
        assert.doesNotMatch(answer, /evil/);
      } finally {
        try {
          conn.close();
        } catch {
          // closed by reading to the end
        }
      }
      assert.equal(upstream.requests.length, 3, "redirects and refusals never reach the upstream");
    } finally {
      await gateway.stop();
      await upstream.close();
    }
  });
});

Deno.test("tls: a certificate swapped and reloaded (SIGHUP) while long requests stream over h2 and http/1.1; new connections get the new one", async () => {
  await withCa(async (ca, leaf) => {
    const release = Promise.withResolvers<void>();
    const upstream = startUpstream((request) => {
      if (!new URL(request.url).pathname.endsWith("/long")) return new Response("short");
      const encoder = new TextEncoder();
      const body = new ReadableStream<Uint8Array>({
        async start(controller) {
          controller.enqueue(encoder.encode("first;"));
          await release.promise;
          controller.enqueue(encoder.encode("last"));
          controller.close();
        },
      });
      return new Response(body);
    });
    const gateway = await startGatewayProcess({
      listen: {
        hostname: "127.0.0.1",
        port: 0,
        tls: { certFile: leaf.certFile, keyFile: leaf.keyFile },
      },
      services: { api: { prefix: "/api", upstreams: [upstream.origin], timeoutMs: 20_000 } },
    });
    try {
      const port = tlsPortOf(gateway);
      assert.equal(await servedSerial(port, ca.caFile), leaf.serial);
      const long = ["--http2", "--http1.1"].map((flag) =>
        curl([flag, "-N", "--cacert", ca.caFile, `https://localhost:${port}/api/long`], 20_000)
      );
      await waitFor(
        () => upstream.requests.filter((r) => r.url.endsWith("/long")).length === 2,
        { what: "both long requests at the upstream" },
      );

      const next = await ca.issue("breakwater-two");
      await Deno.copyFile(next.certFile, leaf.certFile);
      await Deno.copyFile(next.keyFile, leaf.keyFile);
      gateway.child.kill("SIGHUP");
      await waitFor(() => gateway.lines.some((l) => l.msg === "certificate reloaded"), {
        what: "certificate reloaded",
      });
      assert.equal(await servedSerial(port, ca.caFile), next.serial);
      const fresh = await curl([
        "--http2",
        "--cacert",
        ca.caFile,
        `https://localhost:${port}/api/s`,
      ]);
      assert.equal(fresh.stdout, "short");

      release.resolve();
      for (const result of await Promise.all(long)) {
        assert.equal(result.code, 0, result.stderr);
        assert.equal(result.stdout, "first;last");
      }
    } finally {
      release.resolve();
      await gateway.stop();
      await upstream.close();
    }
  });
});

Deno.test("tls: a bad certificate or key stops start-up with exit 2 naming the field", async () => {
  await withCa(async (ca, leaf) => {
    const notPem = `${ca.dir}/not.pem`;
    await Deno.writeTextFile(notPem, "hello\n");
    const cases: [Record<string, string>, RegExp][] = [
      [
        { certFile: `${ca.dir}/missing.pem`, keyFile: leaf.keyFile },
        /listen\.tls\.certFile: cannot read .*missing\.pem: no such file/,
      ],
      [
        { certFile: notPem, keyFile: leaf.keyFile },
        /listen\.tls\.certFile: .*not\.pem is not a PEM certificate/,
      ],
      [
        { certFile: leaf.certFile, keyFile: notPem },
        /listen\.tls\.keyFile: .*not\.pem is not a PEM private key/,
      ],
      [
        { certFile: leaf.certFile, keyFile: ca.strayKeyFile },
        /listen\.tls\.keyFile: .*stray\.key is not the key of the certificate in listen\.tls\.certFile/,
      ],
    ];
    const results = await Promise.all(cases.map(([tls]) =>
      runGatewayExpectingExit(JSON.stringify({
        listen: { hostname: "127.0.0.1", port: 0, tls },
        admin: { hostname: "127.0.0.1", port: 0 },
        kv: { path: ":memory:" },
        services: { api: { prefix: "/api", upstreams: ["http://127.0.0.1:9"] } },
      }))
    ));
    results.forEach((result, i) => {
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, cases[i][1]);
      assert.doesNotMatch(result.stdout, /"listening"/);
    });
  });
});

/** A HEADERS block for `GET path` (RFC 7541: static-table names, literal values, no Huffman). */
function getHeaders(path: string, authority: string): Uint8Array {
  return concatBytes([
    new Uint8Array([0x82, 0x87]), // :method GET, :scheme https (indexed)
    hpackLiterals([[0x04, path], [0x01, authority]]), // :path, :authority
  ]);
}

Deno.test("tls: an HTTP/2 rapid-reset burst leaves the gateway serving others; streams reset in flight never move a breaker", async () => {
  await withCa(async (ca, leaf) => {
    let slowSeen = 0;
    let slowAborted = 0;
    const upstream = startUpstream(async (request) => {
      if (new URL(request.url).pathname.includes("/slow")) {
        // Held until the gateway gives the call up (bounded).
        slowSeen++;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 10_000);
          request.signal.addEventListener("abort", () => {
            clearTimeout(timer);
            slowAborted++;
            resolve();
          });
        });
        return new Response("slow");
      }
      // Slow enough that the resets arrive while requests are in flight.
      await new Promise((resolve) => setTimeout(resolve, 20));
      return new Response(request.signal.aborted ? "late" : "ok");
    });
    const gateway = await startGatewayProcess({
      listen: {
        hostname: "127.0.0.1",
        port: 0,
        tls: { certFile: leaf.certFile, keyFile: leaf.keyFile },
      },
      services: {
        api: {
          prefix: "/api",
          upstreams: [upstream.origin],
          breaker: { failureThreshold: 3 },
        },
      },
    });
    const port = tlsPortOf(gateway);
    const attacker = await Deno.connectTls({
      hostname: "localhost",
      port,
      caCerts: [await Deno.readTextFile(ca.caFile)],
      alpnProtocols: ["h2"],
    });
    try {
      const handshake = await attacker.handshake();
      assert.equal(handshake.alpnProtocol, "h2");
      const cancel = new Uint8Array([0, 0, 0, 8]); // CANCEL
      const parts: Uint8Array[] = [
        H2_PREFACE,
        h2Frame(0x4, 0, 0, new Uint8Array()), // SETTINGS
      ];
      const BURST = 2000;
      for (let i = 0; i < BURST; i++) {
        const stream = 1 + 2 * i;
        parts.push(h2Frame(0x1, 0x5, stream, getHeaders(`/api/r${i}`, `localhost:${port}`)));
        parts.push(h2Frame(0x3, 0, stream, cancel));
      }
      const burst = concatBytes(parts);
      // The server may close the connection mid-burst (GOAWAY ENHANCE_YOUR_CALM): fine.
      await attacker.write(burst).catch(() => 0);
      // Read what the server answers until it closes the connection (bounded).
      const frames = await within(
        (async () => {
          const buffer = new Uint8Array(64 * 1024);
          const chunks: Uint8Array[] = [];
          while (true) {
            const n = await attacker.read(buffer).catch(() => null);
            if (n === null) break;
            chunks.push(buffer.slice(0, n));
          }
          const seen = concatBytes(chunks);
          const out: { type: number; flags: number; payload: Uint8Array }[] = [];
          for (let at = 0; at + 9 <= seen.length;) {
            const length = (seen[at] << 16) | (seen[at + 1] << 8) | seen[at + 2];
            out.push({
              type: seen[at + 3],
              flags: seen[at + 4],
              payload: seen.subarray(at + 9, at + 9 + length),
            });
            at += 9 + length;
          }
          return out;
        })(),
        15_000,
        "the attacker's connection to end",
      );
      // GOAWAY (type 7) with ENHANCE_YOUR_CALM (11, RFC 9113 §7).
      const goAway = frames.find((f) => f.type === 0x7);
      const sawGoAway = goAway !== undefined;
      assert.equal(goAway && new DataView(goAway.payload.slice(4, 8).buffer).getUint32(0), 11);
      // The server's SETTINGS bound streams and header lists (RFC 9113 §6.5.2).
      const settings = new Map<number, number>();
      for (const f of frames.filter((f) => f.type === 0x4 && (f.flags & 0x1) === 0)) {
        const view = new DataView(f.payload.slice().buffer);
        for (let i = 0; i + 6 <= f.payload.length; i += 6) {
          settings.set(view.getUint16(i), view.getUint32(i + 2));
        }
      }
      const maxStreams = settings.get(0x3);
      const maxHeaderList = settings.get(0x6);
      assert.ok(
        maxStreams !== undefined && maxStreams <= 1000,
        `MAX_CONCURRENT_STREAMS ${maxStreams}`,
      );
      assert.ok(
        maxHeaderList !== undefined && maxHeaderList <= 65536,
        `MAX_HEADER_LIST_SIZE ${maxHeaderList}`,
      );
      assert.ok(sawGoAway, "the server ended the attacking connection with GOAWAY");
      assert.ok(
        upstream.requests.length < BURST,
        `the burst was cut short: ${upstream.requests.length} of ${BURST} reached the upstream`,
      );

      // Others are served, over both protocols.
      for (const flag of ["--http2", "--http1.1"]) {
        const result = await curl([
          flag,
          "--cacert",
          ca.caFile,
          `https://localhost:${port}/api/after`,
        ]);
        assert.equal(result.stdout, "ok", result.stderr);
      }

      // Streams reset after they reached the upstream: the gateway gives the calls up, and
      // the client's cancel is never the upstream's failure (threshold 3, 8 resets).
      const canceller = await Deno.connectTls({
        hostname: "localhost",
        port,
        caCerts: [await Deno.readTextFile(ca.caFile)],
        alpnProtocols: ["h2"],
      });
      try {
        const SLOW = 8;
        const streams = Array.from({ length: SLOW }, (_, i) => 1 + 2 * i);
        await canceller.write(concatBytes([
          H2_PREFACE,
          h2Frame(0x4, 0, 0, new Uint8Array()),
          ...streams.map((id) =>
            h2Frame(0x1, 0x5, id, getHeaders(`/api/slow${id}`, `localhost:${port}`))
          ),
        ]));
        await waitFor(() => slowSeen === SLOW, { what: `${SLOW} slow calls at the upstream` });
        await canceller.write(concatBytes(streams.map((id) => h2Frame(0x3, 0, id, cancel))));
        await waitFor(() => slowAborted === SLOW, { what: "the gateway gave the calls up" });
      } finally {
        canceller.close();
      }
      const response = await fetch(`${gateway.adminUrl}/admin/breakers`, bounded());
      const { services } = await response.json() as {
        services: { service: string; state: string; failuresInWindow: number }[];
      };
      assert.equal(services[0].state, "closed", JSON.stringify(services[0]));
      assert.equal(services[0].failuresInWindow, 0, JSON.stringify(services[0]));
    } finally {
      try {
        attacker.close();
      } catch {
        // closed by the server
      }
      await gateway.stop();
      await upstream.close();
    }
  });
});

Deno.test("tls: a partial head is cut after headerTimeoutMs; a stalled handshake blocks no one; body caps and header list bounds hold over h2 and http/1.1", async () => {
  await withCa(async (ca, leaf) => {
    // Reads the whole body before answering, so a stalled upload stays stalled.
    const upstream = startUpstream(async (request) => {
      await request.arrayBuffer().catch(() => {});
      return new Response("ok");
    });
    const gateway = await startGatewayProcess({
      listen: {
        hostname: "127.0.0.1",
        port: 0,
        tls: { certFile: leaf.certFile, keyFile: leaf.keyFile },
      },
      limits: { headerTimeoutMs: 500, bodyIdleTimeoutMs: 500, maxBodyBytes: 1000 },
      services: { api: { prefix: "/api", upstreams: [upstream.origin] } },
    });
    const port = tlsPortOf(gateway);
    const caCerts = [await Deno.readTextFile(ca.caFile)];
    const silent = await Deno.connect({ hostname: "127.0.0.1", port });
    const partial = await Deno.connectTls({ hostname: "localhost", port, caCerts });
    try {
      // No TLS handshake at all: others are still served beside it. (Deno 2.9.6 cannot close
      // a TLS connection before its handshake: README, "TLS and HTTP/2".)
      await silent.write(new Uint8Array([0x16, 0x03, 0x01])); // the start of a ClientHello
      const beside = await curl([
        "--http2",
        "--cacert",
        ca.caFile,
        `https://localhost:${port}/api/x`,
      ]);
      assert.equal(beside.stdout, "ok", beside.stderr);

      // A handshake, then half a head: 408 from the gateway's own HTTP/1.1 server.
      await partial.write(new TextEncoder().encode("GET /api/x HTTP/1.1\r\nHost: localhost\r\n"));
      const answer = await within(new Response(partial.readable).text(), 5000, "partial head");
      assert.match(answer, /^HTTP\/1\.1 408 /);

      // Over h2 the request path makes its own edge checks: body cap and header list bound.
      for (const flag of ["--http2", "--http1.1"]) {
        const big = await curl([
          flag,
          "--cacert",
          ca.caFile,
          "-o",
          "/dev/null",
          "-w",
          "%{http_code}",
          "--data-binary",
          "x".repeat(2000),
          `https://localhost:${port}/api/x`,
        ]);
        assert.equal(big.stdout, "413", `${flag}: ${big.stderr}`);
      }
      const huge = await curl([
        "--http2",
        "--cacert",
        ca.caFile,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        ...Array.from({ length: 40 }, (_, i) => ["-H", `x-big-${i}: ${"v".repeat(4000)}`]).flat(),
        `https://localhost:${port}/api/x`,
      ]);
      assert.notEqual(huge.stdout, "200", "a 160 KB header list is not forwarded");
      assert.equal(upstream.requests.length, 1, "only the request beside the silent one");
      const ok = await curl(["--http2", "--cacert", ca.caFile, `https://localhost:${port}/api/x`]);
      assert.equal(ok.stdout, "ok");

      // An HTTP/2 upload that stalls: 408 after bodyIdleTimeoutMs, the client's fault.
      const uploader = await Deno.connectTls({
        hostname: "localhost",
        port,
        caCerts,
        alpnProtocols: ["h2"],
      });
      try {
        const post = new Uint8Array([
          0x83, // :method POST
          0x87, // :scheme https
          0x04,
          "/api/upload".length,
          ...new TextEncoder().encode("/api/upload"),
          0x01,
          `localhost:${port}`.length,
          ...new TextEncoder().encode(`localhost:${port}`),
        ]);
        await uploader.write(concatBytes([
          H2_PREFACE,
          h2Frame(0x4, 0, 0, new Uint8Array()),
          h2Frame(0x1, 0x4, 1, post), // END_HEADERS, no END_STREAM: a body follows
          h2Frame(0x0, 0, 1, new TextEncoder().encode("part")), // DATA, then nothing
        ]));
        await waitFor(
          () =>
            gateway.lines.some((l) =>
              l.msg === "request" && l.path === "/api/upload" && l.status === 408
            ),
          { what: "the stalled h2 upload answered 408", timeoutMs: 10_000 },
        );
      } finally {
        uploader.close();
      }
      const breakers = await fetch(`${gateway.adminUrl}/admin/breakers`, bounded());
      const { services } = await breakers.json() as {
        services: { failuresInWindow: number }[];
      };
      assert.equal(services[0].failuresInWindow, 0);
    } finally {
      for (const conn of [silent, partial]) {
        try {
          conn.close();
        } catch {
          // closed
        }
      }
      await gateway.stop();
      await upstream.close();
    }
  });
});

Deno.test("tls: SIGTERM drains: streaming requests over h2 and http/1.1 finish, then the process exits 0", async () => {
  await withCa(async (ca, leaf) => {
    const release = Promise.withResolvers<void>();
    const upstream = startUpstream(() => {
      const encoder = new TextEncoder();
      return new Response(
        new ReadableStream<Uint8Array>({
          async start(controller) {
            controller.enqueue(encoder.encode("first;"));
            await release.promise;
            controller.enqueue(encoder.encode("last"));
            controller.close();
          },
        }),
      );
    });
    const gateway = await startGatewayProcess({
      listen: {
        hostname: "127.0.0.1",
        port: 0,
        tls: { certFile: leaf.certFile, keyFile: leaf.keyFile },
      },
      shutdown: { drainDelayMs: 0, timeoutMs: 10_000 },
      services: { api: { prefix: "/api", upstreams: [upstream.origin] } },
    });
    try {
      const port = tlsPortOf(gateway);
      const long = ["--http2", "--http1.1"].map((flag) =>
        curl([flag, "-N", "--cacert", ca.caFile, `https://localhost:${port}/api/long`], 20_000)
      );
      await waitFor(() => upstream.requests.length === 2, { what: "both requests upstream" });
      gateway.child.kill("SIGTERM");
      await waitFor(() => gateway.lines.some((l) => l.msg === "shutdown started"), {
        what: "shutdown started",
      });
      // New connections are no longer taken while the two finish.
      await waitFor(async () => {
        const refused = await curl(["--cacert", ca.caFile, `https://localhost:${port}/api/x`]);
        return refused.code !== 0;
      }, { what: "the TLS port closed to new connections" });
      release.resolve();
      for (const result of await Promise.all(long)) {
        assert.equal(result.code, 0, result.stderr);
        assert.equal(result.stdout, "first;last");
      }
      const status = await within(gateway.child.status, 15_000, "exit after the drain");
      assert.equal(status.code, 0);
      assert.ok(gateway.lines.some((l) => l.msg === "shutdown complete" && l.clean === true));
    } finally {
      release.resolve();
      await gateway.stop();
      await upstream.close();
    }
  });
});
