/**
 * A compression bomb through the `fetch` client: fetch decodes gzip whenever the client
 * accepts it, so `maxDecodedBodyBytes` bounds what the gateway expands. A real upstream sends
 * 10 MiB of zeros gzipped (~10 KiB on the wire).
 */
import assert from "node:assert/strict";
import { createFetchClient } from "../../src/proxy/fetch_client.ts";
import { UpstreamError, type UpstreamRequest } from "../../src/proxy/upstream_client.ts";
import { startTestGateway } from "../_helpers/gateway.ts";
import { startUpstream } from "../_helpers/upstream.ts";
import { bounded, closeAll, within } from "../_helpers/wait.ts";

const MiB = 1024 * 1024;
const BOMB_DECODED = 10 * MiB;

/** 10 MiB of zeros through CompressionStream("gzip"). */
async function gzipBomb(): Promise<Uint8Array<ArrayBuffer>> {
  const zeros = new Uint8Array(BOMB_DECODED);
  const stream = new Blob([zeros]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** An upstream that answers every request with the bomb, labelled gzip (whatever was asked). */
async function bombUpstream() {
  const bomb = await gzipBomb();
  const upstream = startUpstream(() =>
    new Response(bomb, {
      headers: { "content-encoding": "gzip", "content-type": "application/octet-stream" },
    })
  );
  return { upstream, bomb };
}

/** Reads `body` to its end or its error; what came before the error and the error. */
async function drain(body: ReadableStream<Uint8Array>): Promise<{ bytes: number; error: unknown }> {
  let bytes = 0;
  try {
    for await (const chunk of body) bytes += chunk.length;
    return { bytes, error: null };
  } catch (error) {
    return { bytes, error };
  }
}

function bombRequest(origin: string, acceptEncoding: string | null): {
  request: UpstreamRequest;
  failures: UpstreamError[];
} {
  const failures: UpstreamError[] = [];
  const headers: [string, string][] = acceptEncoding === null
    ? []
    : [["accept-encoding", acceptEncoding]];
  return {
    failures,
    request: {
      origin,
      pathAndQuery: "/bomb",
      method: "GET",
      headers,
      body: null,
      signal: AbortSignal.timeout(10_000),
      bodyIdleTimeoutMs: 5000,
      maxDecodedBodyBytes: MiB,
      onBodyFailure: (error) => failures.push(error),
    },
  };
}

Deno.test("fetch client: a decoded gzip bomb is cut past maxDecodedBodyBytes, not reported as the upstream's failure", async () => {
  const { upstream, bomb } = await bombUpstream();
  const client = createFetchClient(() => ({ maxIdlePerHost: 4, idleTimeoutMs: 5000 }));
  try {
    assert.ok(bomb.length < 64 * 1024, `the bomb is small on the wire (${bomb.length} bytes)`);

    // The client accepts gzip: fetch decodes, and the cap cuts it.
    const cut = bombRequest(upstream.origin, "gzip");
    const response = await client.send(cut.request);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-encoding"), null, "decoded: no label");
    const { bytes, error } = await within(drain(response.body!), 10_000, "the cut body");
    assert.ok(error instanceof UpstreamError, String(error));
    assert.match(error.message, /maxDecodedBodyBytes \(1048576\)/);
    // At most the cap plus the one read that crossed it (fetch hands out <= 64 KiB per read).
    assert.ok(bytes <= MiB + 64 * 1024, `handed on ${bytes} bytes`);
    assert.ok(bytes >= MiB - 64 * 1024, `handed on ${bytes} bytes`);
    // The gateway's own limit: a client that asks for gzip must not be able to make a large
    // honest body count against the upstream.
    assert.equal(cut.failures.length, 0, "the cut is not the upstream's failure");

    // A larger cap: the whole 10 MiB arrives, no failure.
    const whole = bombRequest(upstream.origin, "gzip");
    whole.request.maxDecodedBodyBytes = 16 * MiB;
    const all = await drain((await client.send(whole.request)).body!);
    assert.deepEqual(all, { bytes: BOMB_DECODED, error: null });
    assert.equal(whole.failures.length, 0);

    // Not decoded (the client sent no Accept-Encoding: identity goes upstream): the coded
    // bytes pass with their label, uncapped, as the http1 client passes them.
    const coded = bombRequest(upstream.origin, null);
    const passed = await client.send(coded.request);
    assert.equal(passed.headers.get("content-encoding"), "gzip");
    assert.deepEqual(new Uint8Array(await passed.arrayBuffer()), bomb);
    assert.equal(coded.failures.length, 0);
  } finally {
    client.close();
    await upstream.close();
  }
});

Deno.test("gateway (fetch client): the bomb's response is cut for the client and not counted against the upstream", async () => {
  const { upstream } = await bombUpstream();
  const gw = await startTestGateway({
    services: {
      bomb: {
        prefix: "/bomb",
        upstreams: [upstream.origin],
        upstreamClient: "fetch",
        maxDecodedBodyBytes: MiB,
      },
    },
  });
  try {
    const response = await fetch(
      `${gw.url}/bomb`,
      bounded({ headers: { "accept-encoding": "gzip" } }, 10_000),
    );
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-encoding"), null);
    // The client sees an incomplete body (no last chunk), never a complete 10 MiB.
    const { bytes, error } = await drain(response.body!);
    assert.ok(error !== null, "the body must end in an error, not complete");
    assert.ok(bytes <= MiB + 64 * 1024, `received ${bytes} bytes`);
    const view = await (await fetch(`${gw.adminUrl}/admin/breakers`, bounded())).json() as {
      services: { service: string; failuresInWindow: number }[];
    };
    const entry = view.services.find((service) => service.service === "bomb");
    assert.equal(entry?.failuresInWindow, 0, JSON.stringify(entry));
  } finally {
    await closeAll({ gateway: gw, upstream });
  }
});
