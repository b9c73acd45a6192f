/**
 * The HTTP/1.1 upstream client's pool, request serialisation, aborts and retries, against raw
 * TCP upstreams.
 */
import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/schema.ts";
import { createUpstreamClient } from "../../src/proxy/_http1_choice.ts";
import type { ServiceRuntime } from "../../src/proxy/forward.ts";
import { createHttp1Client } from "../../src/proxy/http1_client.ts";
import { UpstreamError, type UpstreamRequest } from "../../src/proxy/upstream_client.ts";
import { startRecordingUpstream } from "../_helpers/raw_http.ts";
import { freePort, readRequestHead, startRawUpstream } from "../_helpers/upstream.ts";

const encoder = new TextEncoder();
const OK = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

function newClient(maxIdlePerHost = 8, idleTimeoutMs = 5000) {
  return createHttp1Client(() => ({ maxIdlePerHost, idleTimeoutMs }));
}

function request(origin: string, init: Partial<UpstreamRequest> = {}): UpstreamRequest {
  return {
    origin,
    pathAndQuery: "/p?q=1",
    method: "GET",
    headers: [],
    body: null,
    signal: new AbortController().signal,
    ...init,
  };
}

async function expectKind(promise: Promise<unknown>, kind: string) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof UpstreamError, String(error));
    assert.equal(error.kind, kind);
    return true;
  });
}

function streamOf(...parts: string[]): ReadableStream<Uint8Array> {
  return ReadableStream.from(parts.map((part) => encoder.encode(part)));
}

Deno.test("serialises the request: line, host from the origin, headers as given", async () => {
  const upstream = startRecordingUpstream();
  const client = newClient();
  try {
    const response = await client.send(request(upstream.origin, {
      headers: [["X-Case", "Kept"], ["host", "ignored"], ["accept", "a"], ["accept", "b"]],
    }));
    assert.equal(await response.text(), "ok");
    const [seen] = upstream.requests;
    assert.equal(seen.requestLine, "GET /p?q=1 HTTP/1.1");
    const port = new URL(upstream.origin).port;
    assert.deepEqual(seen.headers, [
      ["host", `127.0.0.1:${port}`],
      ["x-case", "Kept"],
      ["accept", "a"],
      ["accept", "b"],
    ]);
    assert.deepEqual(upstream.framingErrors, []);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("request bodies: fixed (Uint8Array), declared-length stream, chunked stream", async () => {
  const upstream = startRecordingUpstream();
  const client = newClient();
  try {
    const bodies: UpstreamRequest[] = [
      request(upstream.origin, { method: "POST", body: encoder.encode("fixed body") }),
      request(upstream.origin, {
        method: "PUT",
        headers: [["content-length", "11"]],
        body: streamOf("declared", " ok"),
      }),
      request(upstream.origin, { method: "POST", body: streamOf("chunk", "ed", " body") }),
      request(upstream.origin, { method: "POST" }),
    ];
    for (const body of bodies) assert.equal(await (await client.send(body)).text(), "ok");
    assert.deepEqual(upstream.framingErrors, []);
    assert.deepEqual(upstream.requests.map((r) => r.body), [
      "fixed body",
      "declared ok",
      "chunked body",
      "",
    ]);
    const framing = upstream.requests.map((r) =>
      r.headers.filter(([name]) => name === "content-length" || name === "transfer-encoding")
    );
    assert.deepEqual(framing, [
      [["content-length", "10"]],
      [["content-length", "11"]],
      [["transfer-encoding", "chunked"]],
      [["content-length", "0"]],
    ]);
    assert.equal(upstream.accepted(), 1);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("keep-alive: 20 sequential requests use one connection", async () => {
  const upstream = startRecordingUpstream();
  const client = newClient();
  try {
    for (let i = 0; i < 20; i++) {
      assert.equal(await (await client.send(request(upstream.origin))).text(), "ok");
    }
    assert.equal(upstream.accepted(), 1);
    assert.equal(upstream.requests.length, 20);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("concurrent requests use one connection each; maxIdlePerHost caps the idle ones", async () => {
  const upstream = startRecordingUpstream();
  const client = newClient(2);
  try {
    const responses = await Promise.all(
      Array.from({ length: 5 }, () => client.send(request(upstream.origin))),
    );
    assert.equal(upstream.accepted(), 5);
    for (const response of responses) await response.text();
    assert.equal(client.openConnections(), 2);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("idle connections close after idleTimeoutMs", async () => {
  const upstream = startRecordingUpstream();
  const client = newClient(8, 50);
  try {
    await (await client.send(request(upstream.origin))).text();
    assert.equal(client.openConnections(), 1);
    await new Promise((resolve) => setTimeout(resolve, 150));
    assert.equal(client.openConnections(), 0);
    await (await client.send(request(upstream.origin))).text();
    assert.equal(upstream.accepted(), 2);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("an idle connection the peer closed is dropped from the pool at once", async () => {
  // Each connection answers one request and then closes without saying so.
  const upstream = startRawUpstream(async (conn) => {
    await readRequestHead(conn);
    await conn.write(encoder.encode(OK));
  });
  const client = newClient();
  try {
    for (const body of [null, encoder.encode("again"), streamOf("streamed")]) {
      const response = await client.send(request(upstream.origin, { method: "POST", body }));
      assert.equal(await response.text(), "ok");
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(client.openConnections(), 0);
    }
    assert.equal(upstream.accepted(), 3);
  } finally {
    client.close();
    await upstream.close();
  }
});

/** Answers the first request of each connection; takes the second and closes unanswered. */
function closingOnSecond() {
  return startRawUpstream(async (conn) => {
    await readRequestHead(conn);
    await conn.write(encoder.encode(OK));
    await readRequestHead(conn);
  });
}

Deno.test("a reused connection closed before any answer: retried once on a fresh one", async () => {
  const upstream = closingOnSecond();
  const client = newClient();
  try {
    assert.equal(await (await client.send(request(upstream.origin))).text(), "ok");
    const response = await client.send(
      request(upstream.origin, { method: "POST", body: encoder.encode("again") }),
    );
    assert.equal(await response.text(), "ok");
    assert.equal(upstream.accepted(), 2);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("a streamed body is not retried when a reused connection closes", async () => {
  const upstream = closingOnSecond();
  const client = newClient();
  try {
    await (await client.send(request(upstream.origin))).text();
    await expectKind(
      client.send(request(upstream.origin, { method: "POST", body: streamOf("x") })),
      "unreachable",
    );
    assert.equal(upstream.accepted(), 1);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("connection refused -> unreachable", async () => {
  const client = newClient();
  try {
    await expectKind(client.send(request(`http://127.0.0.1:${freePort()}`)), "unreachable");
  } finally {
    client.close();
  }
});

Deno.test("the connection closed before any answer (fresh connection) -> unreachable", async () => {
  const upstream = startRawUpstream(async (conn) => {
    await readRequestHead(conn);
  });
  const client = newClient();
  try {
    await expectKind(client.send(request(upstream.origin)), "unreachable");
    assert.equal(upstream.accepted(), 1);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("aborts: during connect, waiting for the head, mid-body -> the signal's kind", async () => {
  let release = () => {};
  const hold = new Promise<void>((resolve) => release = resolve);
  const upstream = startRawUpstream(async (conn) => {
    const head = await readRequestHead(conn);
    if (head.includes("/body")) {
      await conn.write(encoder.encode("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart"));
    }
    await hold;
  });
  const client = newClient();
  try {
    // Connect phase: aborted before the socket is up.
    const connecting = new AbortController();
    const first = client.send(request(upstream.origin, { signal: connecting.signal }));
    connecting.abort(new UpstreamError("timeout", "deadline"));
    await expectKind(first, "timeout");

    // Head phase.
    const waiting = new AbortController();
    const second = client.send(request(upstream.origin, { signal: waiting.signal }));
    setTimeout(() => waiting.abort(new UpstreamError("timeout", "deadline")), 50);
    await expectKind(second, "timeout");

    // Body phase: the client went away (a plain abort is "aborted").
    const reading = new AbortController();
    const response = await client.send(
      request(upstream.origin, { pathAndQuery: "/body", signal: reading.signal }),
    );
    const reader = response.body!.getReader();
    assert.equal(new TextDecoder().decode((await reader.read()).value), "part");
    setTimeout(() => reading.abort(), 20);
    await assert.rejects(reader.read(), (error: unknown) => {
      assert.ok(error instanceof UpstreamError);
      assert.equal(error.kind, "aborted");
      return true;
    });
    assert.equal(client.openConnections(), 0);
  } finally {
    release();
    client.close();
    await upstream.close();
  }
});

Deno.test("a cancelled response body destroys the connection", async () => {
  const upstream = startRawUpstream(async (conn) => {
    await readRequestHead(conn);
    await conn.write(encoder.encode("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"));
    await readRequestHead(conn);
  });
  const client = newClient();
  try {
    const response = await client.send(request(upstream.origin));
    await response.body!.cancel();
    assert.equal(client.openConnections(), 0);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("a request body stream that fails -> unreachable, connection destroyed", async () => {
  const upstream = startRawUpstream(async (conn) => {
    await readRequestHead(conn);
    await new Promise((resolve) => setTimeout(resolve, 200));
  });
  const client = newClient();
  try {
    let pulls = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (pulls++ === 0) controller.enqueue(encoder.encode("start"));
        else controller.error(new Error("client broke off"));
      },
    });
    await expectKind(
      client.send(request(upstream.origin, { method: "POST", body })),
      "unreachable",
    );
    assert.equal(client.openConnections(), 0);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("an early answer before the request body ended: connection not reused", async () => {
  const upstream = startRawUpstream(async (conn) => {
    await readRequestHead(conn);
    await conn.write(encoder.encode("HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n"));
    await readRequestHead(conn);
  });
  const client = newClient();
  let cancelled = false;
  try {
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(encoder.encode("some"));
      },
      cancel() {
        cancelled = true;
      },
    });
    const response = await client.send(request(upstream.origin, { method: "POST", body }));
    assert.equal(response.status, 413);
    assert.equal(client.openConnections(), 0);
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.ok(cancelled);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("close() destroys idle connections and refuses new requests", async () => {
  const upstream = startRecordingUpstream();
  const client = newClient();
  try {
    await (await client.send(request(upstream.origin))).text();
    assert.equal(client.openConnections(), 1);
    client.close();
    assert.equal(client.openConnections(), 0);
    await expectKind(client.send(request(upstream.origin)), "unreachable");
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("an invalid request target or header is refused before any connection", async () => {
  const upstream = startRecordingUpstream();
  const client = newClient();
  try {
    await expectKind(
      client.send(request(upstream.origin, { pathAndQuery: "/a b" })),
      "unreachable",
    );
    await expectKind(
      client.send(request(upstream.origin, { headers: [["x-a", "b\r\nx-evil: 1"]] })),
      "unreachable",
    );
    assert.equal(upstream.accepted(), 0);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("config: upstreamClient defaults to fetch; http1 per service or in defaults", () => {
  const base = { prefix: "/a", upstreams: ["http://127.0.0.1:1"] };
  assert.equal(parseConfig({ services: { a: base } }).services.a.upstreamClient, "fetch");
  const viaDefaults = parseConfig({ defaults: { upstreamClient: "http1" }, services: { a: base } });
  assert.equal(viaDefaults.services.a.upstreamClient, "http1");
  assert.throws(() => parseConfig({ services: { a: { ...base, upstreamClient: "h2" } } }));
});

Deno.test("dispatch: http1 only for origins all of whose services chose it", async () => {
  const upstreams = [startRecordingUpstream(), startRecordingUpstream()];
  const [only, shared] = upstreams;
  const service = (choice: string, origins: string[]) =>
    ({
      config: { upstreamClient: choice },
      balancer: { endpoints: origins.map((origin) => ({ origin })) },
    }) as unknown as ServiceRuntime;
  const client = createUpstreamClient(
    [service("http1", [only.origin, shared.origin]), service("fetch", [shared.origin])],
    new Map(),
  );
  try {
    for (const upstream of upstreams) {
      await (await client.send(request(upstream.origin))).text();
    }
    // fetch adds a user-agent of its own; the http1 client sends the headers as given.
    const agent = (upstream: typeof only) =>
      upstream.requests[0].headers.some(([name]) => name === "user-agent");
    assert.equal(agent(only), false);
    assert.equal(agent(shared), true);
  } finally {
    client.close();
    for (const upstream of upstreams) await upstream.close();
  }
});

Deno.test("https origins: TLS via Deno.connectTls, keep-alive reuse", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const made = await new Deno.Command("openssl", {
      args: [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-days",
        "1",
        "-keyout",
        `${dir}/key.pem`,
        "-out",
        `${dir}/cert.pem`,
      ],
      stdout: "null",
      stderr: "null",
    }).output();
    assert.ok(made.success, "openssl failed");
    const cert = await Deno.readTextFile(`${dir}/cert.pem`);
    const key = await Deno.readTextFile(`${dir}/key.pem`);
    const ports = new Set<number>();
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, cert, key, onListen: () => {} },
      (req, info) => {
        ports.add(info.remoteAddr.port);
        return new Response(`tls ${new URL(req.url).pathname}`);
      },
    );
    const client = createHttp1Client(() => ({ maxIdlePerHost: 4, idleTimeoutMs: 5000 }), {
      caCerts: [cert],
    });
    try {
      const origin = `https://localhost:${server.addr.port}`;
      for (let i = 0; i < 3; i++) {
        const response = await client.send(request(origin, { pathAndQuery: "/secure" }));
        assert.equal(await response.text(), "tls /secure");
      }
      assert.equal(ports.size, 1);
    } finally {
      client.close();
      await server.shutdown();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
