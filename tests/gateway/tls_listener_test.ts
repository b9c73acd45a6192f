/**
 * `listen.tls` on the gateway side: the certificate pair read and checked with problems that
 * name the field, the plain port's redirect (never to a Host it did not validate), and the
 * launcher granting read access to the files.
 *
 * @module
 */
import assert from "node:assert/strict";
import { ConfigError } from "../../src/config/schema.ts";
import { hostName, readCertificatePair, redirectToHttps } from "../../src/gateway/tls_listener.ts";
import { listenTlsFilesFromConfigFile, permissionsFor } from "../../src/launch.ts";
import type { ServeInfo } from "../../src/server/http1_server.ts";
import { createTestCa } from "../e2e/_tls_certs.ts";

function problemsOf(run: () => unknown): string[] {
  try {
    run();
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error.problems.map((p) => `${p.path}: ${p.message}`);
  }
  assert.fail("no ConfigError");
}

Deno.test("readCertificatePair: a matching pair is read; missing, not PEM and mismatched name the field", async () => {
  const ca = await createTestCa();
  try {
    const leaf = await ca.issue("unit");
    const tls = { certFile: leaf.certFile, keyFile: leaf.keyFile, port: null, http2: true };
    const pair = readCertificatePair(tls);
    assert.match(pair.cert, /BEGIN CERTIFICATE/);
    assert.match(pair.key, /PRIVATE KEY/);

    const missing = problemsOf(() =>
      readCertificatePair({ ...tls, certFile: `${ca.dir}/nope.pem`, keyFile: `${ca.dir}/nope.key` })
    );
    assert.equal(missing.length, 2);
    assert.match(missing[0], /^listen\.tls\.certFile: cannot read .*nope\.pem: no such file$/);
    assert.match(missing[1], /^listen\.tls\.keyFile: cannot read .*nope\.key: no such file$/);

    // Each file in the other's place: neither holds what its field needs.
    const swapped = problemsOf(() =>
      readCertificatePair({ ...tls, certFile: leaf.keyFile, keyFile: leaf.certFile })
    );
    assert.match(swapped[0], /^listen\.tls\.certFile: .* is not a PEM certificate/);
    assert.match(swapped[1], /^listen\.tls\.keyFile: .* is not a PEM private key/);

    const mismatched = problemsOf(() => readCertificatePair({ ...tls, keyFile: ca.strayKeyFile }));
    assert.deepEqual(mismatched, [
      `listen.tls.keyFile: ${ca.strayKeyFile} is not the key of the certificate in ` +
      `listen.tls.certFile (${leaf.certFile})`,
    ]);
  } finally {
    await ca.remove();
  }
});

function info(target: string): ServeInfo {
  return {
    remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 1 },
    target,
    method: "GET",
    body: null,
    completed: Promise.resolve(),
  };
}

Deno.test("redirectToHttps: 308 to the same target on the TLS port; health routes stay; a bad Host is 400", async () => {
  const handler = redirectToHttps(8443, () => new Response("next"));
  const request = (host: string | null) =>
    new Request("http://localhost/", { headers: host === null ? {} : { host } });

  const moved = await handler(request("api.example:8080"), info("/a/b?c=1&d"));
  assert.equal(moved.status, 308);
  assert.equal(moved.headers.get("location"), "https://api.example:8443/a/b?c=1&d");
  const v6 = await handler(request("[::1]:8080"), info("/x"));
  assert.equal(v6.headers.get("location"), "https://[::1]:8443/x");
  const standard = await redirectToHttps(443, () => new Response())(
    request("a.example"),
    info("/"),
  );
  assert.equal(standard.headers.get("location"), "https://a.example/");

  assert.equal(await (await handler(request("a"), info("/healthz"))).text(), "next");
  assert.equal(await (await handler(request("a"), info("/readyz?x"))).text(), "next");

  for (const host of [null, "", "evil.example/x#", "a b", "h:99999"]) {
    const refused = await handler(request(host), info("/x"));
    assert.equal(refused.status, 400, String(host));
    assert.equal(refused.headers.get("location"), null);
    await refused.body?.cancel();
  }
});

Deno.test("hostName: the Host without its port", () => {
  assert.equal(hostName("a.example:80"), "a.example");
  assert.equal(hostName("a.example"), "a.example");
  assert.equal(hostName("[::1]:80"), "[::1]");
  assert.equal(hostName("[::1]"), "[::1]");
});

Deno.test("launcher: the listen.tls files are granted for reading", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const configPath = `${dir}/gw.json`;
    await Deno.writeTextFile(
      configPath,
      JSON.stringify({
        listen: { tls: { certFile: "tls/cert.pem", keyFile: "/etc/keys/key.pem" } },
        kv: { path: ":memory:" },
        services: { a: { prefix: "/a", upstreams: ["http://127.0.0.1:9"] } },
      }),
    );
    const files = listenTlsFilesFromConfigFile(configPath);
    assert.deepEqual(files, ["tls/cert.pem", "/etc/keys/key.pem"]);
    assert.deepEqual(permissionsFor(configPath, ":memory:", "/srv", files).read.slice(1, 3), [
      "/srv/tls/cert.pem",
      "/etc/keys/key.pem",
    ]);
    assert.deepEqual(listenTlsFilesFromConfigFile(`${dir}/missing.json`), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
