/**
 * A client per service: each service's requests go through the kind it chose, even when two
 * services with different choices share an origin; pools are per (kind, TLS settings, origin),
 * sized by the largest service using them.
 */
import assert from "node:assert/strict";
import { createServiceClients, type ServiceClientSpec } from "../../src/proxy/clients.ts";
import type { UpstreamRequest } from "../../src/proxy/upstream_client.ts";
import { startRecordingUpstream } from "../_helpers/raw_http.ts";

function request(origin: string): UpstreamRequest {
  return {
    origin,
    pathAndQuery: "/p",
    method: "GET",
    headers: [],
    body: null,
    signal: AbortSignal.timeout(10_000),
  };
}

function service(
  name: string,
  upstreamClient: "fetch" | "http1",
  upstreams: string[],
  maxConnections = 4,
): ServiceClientSpec {
  return { name, upstreamClient, upstreams, pool: { maxConnections, idleTimeoutMs: 5000 } };
}

Deno.test("two services on one origin, one fetch and one http1: each request uses its own kind", async () => {
  const upstream = startRecordingUpstream();
  const clients = createServiceClients([
    service("faithful", "http1", [upstream.origin]),
    service("legacy", "fetch", [upstream.origin]),
  ]);
  try {
    const order = ["faithful", "legacy", "faithful", "legacy"];
    for (const name of order) {
      assert.equal(
        await (await clients.clientFor(name).send(request(upstream.origin))).text(),
        "ok",
      );
    }
    // fetch adds a user-agent of its own; the http1 client sends the headers as given.
    const agents = upstream.requests.map((seen) =>
      seen.headers.some(([name]) => name === "user-agent")
    );
    assert.deepEqual(agents, [false, true, false, true]);
    // Separate pools: one keep-alive connection per kind.
    assert.equal(upstream.accepted(), 2);
    assert.equal(clients.openConnections(), 1);
  } finally {
    clients.close();
    await upstream.close();
  }
});

Deno.test("an origin's pool is sized by the largest service of that kind naming it", async () => {
  const upstream = startRecordingUpstream();
  const clients = createServiceClients([
    service("small", "http1", [upstream.origin], 1),
    service("large", "http1", [`${upstream.origin}/`], 3),
    service("other", "fetch", [upstream.origin], 10),
  ]);
  try {
    const client = clients.clientFor("small");
    assert.equal(client, clients.clientFor("large"));
    const responses = await Promise.all(
      Array.from({ length: 5 }, () => client.send(request(upstream.origin))),
    );
    for (const response of responses) await response.text();
    // Five connections were needed; three stay idle (the larger service's maxConnections).
    assert.equal(upstream.accepted(), 5);
    assert.equal(clients.openConnections(), 3);
  } finally {
    clients.close();
    await upstream.close();
  }
  assert.equal(clients.openConnections(), 0);
});

Deno.test("a service that was not given has no client", () => {
  const clients = createServiceClients([service("a", "http1", ["http://127.0.0.1:9"])]);
  try {
    assert.throws(() => clients.clientFor("b"), /no upstream client for service b/);
  } finally {
    clients.close();
  }
});

Deno.test("services share a client only with the same kind and the same TLS material", () => {
  const material = (digest: string) => ({ caCerts: [], digest });
  const tls = (digest: string | null) =>
    digest === null
      ? null
      : { caFile: "ca.pem", certFile: null, keyFile: null, material: material(digest) };
  const spec = (name: string, kind: "fetch" | "http1", digest: string | null) => ({
    ...service(name, kind, ["https://127.0.0.1:9"]),
    tls: tls(digest),
  });
  const clients = createServiceClients([
    spec("plainA", "http1", null),
    spec("plainB", "http1", null),
    spec("caA", "http1", "sha256:a"),
    spec("caA2", "http1", "sha256:a"),
    spec("caB", "http1", "sha256:b"),
    spec("fetchA", "fetch", "sha256:a"),
  ]);
  try {
    const of = (name: string) => clients.clientFor(name);
    assert.equal(of("plainA"), of("plainB"));
    assert.equal(of("caA"), of("caA2"));
    assert.notEqual(of("plainA"), of("caA"));
    assert.notEqual(of("caA"), of("caB"));
    assert.notEqual(of("caA"), of("fetchA"));
  } finally {
    clients.close();
  }
});
