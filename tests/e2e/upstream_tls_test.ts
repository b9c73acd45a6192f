/**
 * Upstream TLS end to end: a gateway process started the way `deno task start` starts it (the
 * launcher derives `--allow-read` for the `tls` files, which live outside the config's folder)
 * in front of
 *
 * - an https upstream (`Deno.serve` with a certificate of a private CA) trusted through
 *   `tls.caFile`, by both clients, and the same upstream without the CA (502, counted: the
 *   breaker opens at its threshold);
 * - an upstream requiring a client certificate (`openssl s_server -Verify 1`: Deno's TLS
 *   listeners cannot require one) with `tls.certFile`/`keyFile` (200) and without (502);
 * - streaming through TLS: server-sent events pass event by event, a 16 MiB download whole;
 * - a raw upstream answering `103 Early Hints` before its 200: the `http1` client passes it on,
 *   `fetch` drops it;
 * - health checks over TLS with the service's trust (and without it: out of rotation);
 *
 * and start-up refusing a missing file or a key that is not the certificate's (exit 2, the
 * field named), and SIGHUP re-reading the files (a fixed CA bundle applies, a broken one is
 * refused while the running config keeps serving).
 */
import assert from "node:assert/strict";
import { makeUpstreamCerts, startMtlsUpstream } from "../proxy/_upstream_tls_certs.ts";
import { LAUNCHER, MAIN, runDeno, spawnDeno, taskFlags } from "../cli/_run.ts";
import { readRequestHead, sendRaw, startRawUpstream } from "../_helpers/upstream.ts";
import { bounded, closeAll, waitFor, within } from "../_helpers/wait.ts";

const START_FLAGS = taskFlags("start");
const DOWNLOAD_BYTES = 16 * 1024 * 1024;
const encoder = new TextEncoder();

/** Byte `i` of the download: a pattern a dropped or repeated chunk would break. */
const byteAt = (i: number) => (i * 31 + (i >>> 16)) & 0xff;

/** The https upstream: `/sse` (two events; the second once `releaseSecond()`), `/download`. */
function startHttpsUpstream(cert: string, key: string) {
  let healthProbes = 0;
  let release: () => void = () => {};
  const second = new Promise<void>((resolve) => release = resolve);
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert,
    key,
    onListen: () => {},
    onError: () => new Response("error", { status: 500 }),
  }, (request) => {
    const path = new URL(request.url).pathname;
    if (path === "/health") healthProbes++;
    if (path === "/sse") {
      const body = new ReadableStream<Uint8Array>({
        async start(controller) {
          controller.enqueue(encoder.encode("data: one\n\n"));
          await second;
          controller.enqueue(encoder.encode("data: two\n\n"));
          controller.close();
        },
      });
      return new Response(body, { headers: { "content-type": "text/event-stream" } });
    }
    if (path === "/download") {
      let sent = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          const size = Math.min(256 * 1024, DOWNLOAD_BYTES - sent);
          const chunk = new Uint8Array(size);
          for (let i = 0; i < size; i++) chunk[i] = byteAt(sent + i);
          sent += size;
          controller.enqueue(chunk);
          if (sent === DOWNLOAD_BYTES) controller.close();
        },
      });
      return new Response(body, { headers: { "content-length": String(DOWNLOAD_BYTES) } });
    }
    return new Response(`ok ${path} host=${request.headers.get("host")}`);
  });
  return {
    origin: `https://127.0.0.1:${server.addr.port}`,
    releaseSecond: () => release(),
    healthProbes: () => healthProbes,
    close: () => server.shutdown(),
  };
}

/** Answers every request with `103 Early Hints` (a Link) and then `200` without it. */
function startEarlyHintsUpstream() {
  return startRawUpstream(async (conn) => {
    try {
      await readRequestHead(conn);
      await conn.write(encoder.encode(
        "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n\r\n",
      ));
      await conn.write(encoder.encode(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n" +
          "connection: close\r\n\r\nfinal",
      ));
    } finally {
      conn.close();
    }
  });
}

/** Starts the gateway through the launcher; resolves with its ports once it listens. */
async function startGateway(configPath: string) {
  const gateway = spawnDeno(["run", ...START_FLAGS, LAUNCHER, "--config", configPath], {
    env: { BREAKWATER_LOG_LEVEL: "info" },
  });
  try {
    const line = await gateway.waitForLine((text) => text.includes('"listening"'), 30_000);
    const { port, adminPort, workers } = JSON.parse(line);
    return {
      gateway,
      url: `http://127.0.0.1:${port}`,
      adminUrl: `http://127.0.0.1:${adminPort}`,
      // Threads that log "config reloaded" at a reload: the main thread and each worker.
      threads: 1 + Number(workers ?? 0),
    };
  } catch (error) {
    await gateway.stop("SIGKILL");
    throw error;
  }
}

Deno.test("upstream TLS end to end through a gateway process started by the launcher", async (t) => {
  const certs = await makeUpstreamCerts();
  const configDir = await Deno.makeTempDir({ prefix: "breakwater-upstream-tls-e2e-" });
  const https = startHttpsUpstream(certs.serverCert, certs.serverKey);
  const mtls = await startMtlsUpstream(certs);
  const hints = startEarlyHintsUpstream();
  let running: Awaited<ReturnType<typeof startGateway>> | null = null;
  try {
    const trust = { caFile: certs.caFile };
    const clientCert = { certFile: certs.clientCertFile, keyFile: certs.clientKeyFile };
    const service = (
      prefix: string,
      upstream: string,
      upstreamClient: string,
      tls: unknown,
    ) => ({ prefix, upstreams: [upstream], stripPrefix: true, upstreamClient, tls });
    const healthCheck = { intervalMs: 100, healthyThreshold: 1, unhealthyThreshold: 1 };
    const configPath = `${configDir}/gateway.json`;
    await Deno.writeTextFile(
      configPath,
      JSON.stringify({
        listen: { hostname: "127.0.0.1", port: 0 },
        admin: { hostname: "127.0.0.1", port: 0 },
        kv: { path: ":memory:" },
        // One thread: "both failures counted, the third refused" is the single-threaded
        // breaker's; a worker's trip reaches it by a message (README, "Workers").
        workers: 1,
        defaults: { breaker: { failureThreshold: 2 }, timeoutMs: 5000 },
        services: {
          "private-http1": service("/private-http1", https.origin, "http1", trust),
          "private-fetch": service("/private-fetch", https.origin, "fetch", trust),
          "untrusted-http1": service("/untrusted-http1", https.origin, "http1", null),
          "untrusted-fetch": service("/untrusted-fetch", https.origin, "fetch", null),
          "mtls-http1": service("/mtls-http1", mtls.origin, "http1", { ...trust, ...clientCert }),
          "mtls-fetch": service("/mtls-fetch", mtls.origin, "fetch", { ...trust, ...clientCert }),
          "nocert-http1": service("/nocert-http1", mtls.origin, "http1", trust),
          "hints-http1": service("/hints-http1", hints.origin, "http1", null),
          "hints-fetch": service("/hints-fetch", hints.origin, "fetch", null),
          "health-trusted": { ...service("/ht", https.origin, "http1", trust), healthCheck },
          "health-untrusted": { ...service("/hu", https.origin, "http1", null), healthCheck },
        },
      }),
    );
    running = await startGateway(configPath);
    const { url } = running;

    for (const kind of ["http1", "fetch"]) {
      await t.step(`${kind}: an https upstream with a private CA`, async () => {
        const response = await fetch(`${url}/private-${kind}/hello`, bounded());
        assert.equal(response.status, 200);
        assert.equal(await response.text(), `ok /hello host=${new URL(https.origin).host}`);
      });

      await t.step(`${kind}: the same upstream without its CA: 502, counted`, async () => {
        for (let i = 0; i < 2; i++) {
          const response = await fetch(`${url}/untrusted-${kind}/x`, bounded());
          assert.equal(response.status, 502);
          assert.equal(response.headers.get("x-breakwater-error"), "upstream_unreachable");
          await response.body?.cancel();
        }
        // failureThreshold 2: both failures counted, so the breaker is open now.
        const third = await fetch(`${url}/untrusted-${kind}/x`, bounded());
        assert.equal(third.status, 503);
        assert.equal(third.headers.get("x-breakwater-error"), "breaker_open");
        await third.body?.cancel();
      });

      await t.step(`${kind}: an upstream requiring a client certificate`, async () => {
        const response = await fetch(`${url}/mtls-${kind}/`, bounded());
        assert.equal(response.status, 200);
        // openssl's status page names the client certificate it verified.
        assert.match(await response.text(), /breakwater-gateway/);
      });
    }

    await t.step("without the client certificate: 502", async () => {
      const response = await fetch(`${url}/nocert-http1/`, bounded());
      assert.equal(response.status, 502);
      assert.equal(response.headers.get("x-breakwater-error"), "upstream_unreachable");
      await response.body?.cancel();
    });

    await t.step("health checks go through the service's TLS settings", async () => {
      const upstreamsOf = async (name: string) => {
        const response = await fetch(`${url}/readyz`, bounded());
        return (await response.json()).services[name].upstreams;
      };
      await waitFor(async () => (await upstreamsOf("health-untrusted"))[0].available === false, {
        timeoutMs: 5000,
        what: "the untrusted service's upstream out of rotation",
      });
      // Probes of the trusted service arrived and kept its upstream in rotation.
      assert.ok(https.healthProbes() > 0);
      assert.equal((await upstreamsOf("health-trusted"))[0].available, true);
    });

    await t.step("server-sent events pass event by event over TLS", async () => {
      const response = await fetch(`${url}/private-http1/sse`, bounded({}, 10_000));
      assert.equal(response.headers.get("content-type"), "text/event-stream");
      const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
      let text = "";
      // The upstream holds the second event back until the first reached the client.
      while (!text.includes("data: one\n\n")) {
        const { value, done } = await within(reader.read(), 5000, "the first event");
        assert.ok(!done, "the stream ended before the first event");
        text += value;
      }
      assert.ok(!text.includes("two"));
      https.releaseSecond();
      while (true) {
        const { value, done } = await within(reader.read(), 5000, "the second event");
        if (done) break;
        text += value;
      }
      assert.equal(text, "data: one\n\ndata: two\n\n");
    });

    for (const kind of ["http1", "fetch"]) {
      await t.step(`${kind}: a 16 MiB download arrives whole over TLS`, async () => {
        const response = await fetch(`${url}/private-${kind}/download`, bounded({}, 30_000));
        assert.equal(response.status, 200);
        assert.equal(response.headers.get("content-length"), String(DOWNLOAD_BYTES));
        let offset = 0;
        let wrong = -1;
        for await (const chunk of response.body!) {
          for (let i = 0; i < chunk.length && wrong === -1; i++) {
            if (chunk[i] !== byteAt(offset + i)) wrong = offset + i;
          }
          offset += chunk.length;
        }
        assert.equal(wrong, -1, `byte ${wrong} differs`);
        assert.equal(offset, DOWNLOAD_BYTES);
      });

      const passes = kind === "http1";
      await t.step(
        `${kind}: 103 Early Hints ${passes ? "passes" : "is dropped"}; the 200 passes`,
        async () => {
          const port = Number(new URL(url).port);
          const raw = await sendRaw(
            port,
            `GET /hints-${kind}/page HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n`,
          );
          if (passes) {
            // The http1 client passes the interim head on as it came, then the final one.
            assert.match(
              raw,
              /^HTTP\/1\.1 103 Early Hints\r\nlink: <\/style\.css>; rel=preload; as=style\r\n\r\nHTTP\/1\.1 200 /,
              raw,
            );
          } else {
            // fetch gives no access to interim responses.
            assert.match(raw, /^HTTP\/1\.1 200 /, raw);
            assert.ok(!raw.includes(" 103 "), raw);
          }
          const final = raw.slice(raw.indexOf("HTTP/1.1 200 "));
          assert.ok(!/^link:/im.test(final), "the hint's Link is not merged into the 200");
          assert.ok(raw.endsWith("\r\n\r\nfinal"), raw);
        },
      );
    }
  } finally {
    await running?.gateway.stop();
    await closeAll({ https, mtls, hints });
    await Deno.remove(configDir, { recursive: true });
    await certs.remove();
  }
});

Deno.test("start-up refuses tls files it cannot use: exit 2, the field named", async () => {
  const certs = await makeUpstreamCerts();
  const configDir = await Deno.makeTempDir({ prefix: "breakwater-upstream-tls-e2e-" });
  try {
    const configPath = `${configDir}/gateway.json`;
    const run = async (tls: Record<string, string>, directFlags?: string[]) => {
      await Deno.writeTextFile(
        configPath,
        JSON.stringify({
          listen: { hostname: "127.0.0.1", port: 0 },
          admin: { hostname: "127.0.0.1", port: 0 },
          kv: { path: ":memory:" },
          services: { files: { prefix: "/f", upstreams: ["https://127.0.0.1:9"], tls } },
        }),
      );
      // Directly (not through the launcher): with exactly the permission flags given.
      if (directFlags !== undefined) {
        return await runDeno(["run", "--no-prompt", ...directFlags, MAIN, "--config", configPath]);
      }
      return await runDeno(["run", ...START_FLAGS, LAUNCHER, "--config", configPath]);
    };
    const missing = await run({ caFile: `${certs.dir}/nope.pem` });
    assert.equal(missing.code, 2, missing.stderr);
    assert.match(
      missing.stderr,
      /services\.files\.tls\.caFile: cannot read .*nope\.pem: file not found/,
    );
    const mismatch = await run({ certFile: certs.clientCertFile, keyFile: certs.serverKeyFile });
    assert.equal(mismatch.code, 2, mismatch.stderr);
    assert.match(
      mismatch.stderr,
      /services\.files\.tls\.keyFile: is not the private key of the first certificate/,
    );
    const notPem = await run({ caFile: certs.clientKeyFile });
    assert.equal(notPem.code, 2, notPem.stderr);
    assert.match(notPem.stderr, /services\.files\.tls\.caFile: holds no PEM certificate/);
    // Unreadable: the gateway run without read access to the file.
    const refused = await run({ caFile: certs.caFile }, [
      "--allow-net",
      "--allow-env",
      "--allow-sys",
      `--allow-read=${configPath},/sys/fs/cgroup,/proc/self`,
    ]);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(
      refused.stderr,
      /services\.files\.tls\.caFile: cannot read .*ca\.pem: read not permitted \(grant it with --allow-read/,
    );
  } finally {
    await Deno.remove(configDir, { recursive: true });
    await certs.remove();
  }
});

Deno.test("a reload re-reads the tls files: a fixed CA bundle applies, a broken one is refused", async () => {
  const certs = await makeUpstreamCerts();
  const configDir = await Deno.makeTempDir({ prefix: "breakwater-upstream-tls-e2e-" });
  const https = startHttpsUpstream(certs.serverCert, certs.serverKey);
  let running: Awaited<ReturnType<typeof startGateway>> | null = null;
  try {
    // At first the bundle holds the wrong CA (the client CA): the upstream does not verify.
    const trustFile = `${configDir}/trust.pem`;
    await Deno.writeTextFile(trustFile, Deno.readTextFileSync(certs.clientCaFile));
    const configPath = `${configDir}/gateway.json`;
    await Deno.writeTextFile(
      configPath,
      JSON.stringify({
        listen: { hostname: "127.0.0.1", port: 0 },
        admin: { hostname: "127.0.0.1", port: 0 },
        kv: { path: ":memory:" },
        services: {
          files: {
            prefix: "/files",
            upstreams: [https.origin],
            stripPrefix: true,
            tls: { caFile: trustFile },
          },
        },
      }),
    );
    running = await startGateway(configPath);
    const { url, gateway, threads } = running;
    const status = async () => {
      const response = await fetch(`${url}/files/x`, bounded());
      await response.body?.cancel();
      return response.status;
    };
    assert.equal(await status(), 502);

    await Deno.writeTextFile(trustFile, certs.ca);
    gateway.child.kill("SIGHUP");
    // In force once every thread logged it (the main thread first, then each worker).
    const reloadedLines = () => gateway.lines.filter((line) => line.includes('"config reloaded"'));
    await gateway.waitForLine(() => reloadedLines().length >= threads);
    assert.deepEqual(JSON.parse(reloadedLines()[0]).changed, ["files"]);
    assert.equal(await status(), 200);

    await Deno.writeTextFile(trustFile, "not a certificate\n");
    gateway.child.kill("SIGHUP");
    const refused = await gateway.waitForLine((line) => line.includes("config reload refused"));
    assert.match(refused, /services\.files\.tls\.caFile: holds no PEM certificate/);
    assert.equal(await status(), 200, "the running config keeps serving");
  } finally {
    await running?.gateway.stop();
    await https.close();
    await Deno.remove(configDir, { recursive: true });
    await certs.remove();
  }
});
