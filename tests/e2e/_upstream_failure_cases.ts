/**
 * Broken upstreams on raw sockets: truncated chunked bodies, short bodies, garbage status lines,
 * malformed headers, and upstreams that close idle keep-alive connections.
 * Shared by the suite files so each upstream client runs the same cases
 * (`hardening_upstream_test.ts` with `fetch`, `http1_e2e_test.ts` with `http1`).
 */
import assert from "node:assert/strict";
import {
  startTestGateway as startGateway,
  type UpstreamClientChoice,
  withUpstreamClient,
} from "../_helpers/gateway.ts";
import { readRequestHead, startRawUpstream } from "../_helpers/upstream.ts";
import { bounded, closeAll, waitFor } from "../_helpers/wait.ts";

const encoder = new TextEncoder();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** fetch with a hard bound: a hang fails the test instead of stalling the suite. */
async function boundedFetch(
  url: string,
  ms = 4000,
): Promise<{ status: number; body: string | null; error: string | null; tookMs: number }> {
  const t0 = performance.now();
  try {
    const response = await fetch(url, bounded({}, ms));
    let body: string | null = null;
    let error: string | null = null;
    try {
      body = await response.text();
    } catch (e) {
      error = String(e);
    }
    return { status: response.status, body, error, tookMs: performance.now() - t0 };
  } catch (e) {
    return { status: 0, body: null, error: String(e), tookMs: performance.now() - t0 };
  }
}

/** Registers the cases for `client`; test names get a `client: ` prefix except for fetch. */
export function upstreamFailureCases(client: UpstreamClientChoice): void {
  const prefix = client === "fetch" ? "" : `${client}: `;
  const startTestGateway = (
    config: Record<string, unknown>,
    env: Record<string, string | undefined> = {},
  ) => startGateway(withUpstreamClient(config, client), env);

  Deno.test(
    prefix +
      "malformed upstream answers -> 502; truncated bodies reach the client cut, never complete",
    async () => {
      const scripts: Record<string, string> = {
        garbage: "GARBAGE\r\n\r\n",
        badStatus: "HTTP/1.1 abc OK\r\ncontent-length: 2\r\n\r\nok",
        hugeStatus: "HTTP/1.1 99999 OK\r\ncontent-length: 2\r\n\r\nok",
        badHeader: "HTTP/1.1 200 OK\r\nno colon here\r\ncontent-length: 2\r\n\r\nok",
        nulHeader: "HTTP/1.1 200 OK\r\nx-a: b\0c\r\ncontent-length: 2\r\n\r\nok",
        twoLengths: "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 7\r\n\r\nokokoko",
        binary: "\x00\x01\x02\x03\xff\xfe\r\n\r\n",
        empty: "",
        truncatedChunked: "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        badChunk: "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        shortBody: "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly a few bytes",
      };
      const upstream = startRawUpstream(async (conn) => {
        const head = await readRequestHead(conn);
        const name = head.split(" ")[1].split("/").pop()!;
        await conn.write(encoder.encode(scripts[name] ?? "HTTP/1.1 404 Not Found\r\n\r\n"));
        // Close at once: truncation is the point.
      });
      const gw = await startTestGateway({
        services: {
          s: {
            prefix: "/s",
            upstreams: [upstream.origin],
            timeoutMs: 3000,
            breaker: { failureThreshold: 1000 },
          },
        },
      });
      try {
        for (
          const name of [
            "garbage",
            "badStatus",
            "hugeStatus",
            "badHeader",
            "nulHeader",
            "twoLengths",
            "binary",
            "empty",
          ]
        ) {
          const result = await boundedFetch(`${gw.url}/s/${name}`);
          assert.equal(result.status, 502, `${name}: ${JSON.stringify(result)}`);
          assert.ok(result.tookMs < 3000, `${name} took ${result.tookMs}`);
        }
        for (const name of ["truncatedChunked", "badChunk", "shortBody"]) {
          const result = await boundedFetch(`${gw.url}/s/${name}`);
          // Either refused before the head (502) or the head went out and the body is cut: the
          // client must not receive what looks like a complete, well-framed 200.
          if (result.status === 200) {
            assert.ok(result.error !== null, `${name}: client saw a complete body ${result.body}`);
          } else {
            assert.equal(result.status, 502, `${name}: ${JSON.stringify(result)}`);
          }
          assert.ok(result.tookMs < 3000, `${name} took ${result.tookMs}`);
        }
        await waitFor(() => gw.gateway.poolUsage().s.active === 0, {
          timeoutMs: 1000,
          what: "every upstream connection back from the broken answers",
        });
        assert.equal((await boundedFetch(`${gw.url}/healthz`)).status, 200);
      } finally {
        await closeAll({ gw, upstream });
      }
    },
  );

  for (
    const variant of [
      { name: "closes idle keep-alive connections after 50 ms", closeAfterMs: 50 },
      { name: "closes each connection right after one keep-alive answer", closeAfterMs: 0 },
    ]
  ) {
    Deno.test(`${prefix}an upstream that ${variant.name}: the next request succeeds or 502s, never hangs`, async () => {
      let served = 0;
      const upstream = startRawUpstream(async (conn) => {
        // One request per connection, advertised as keep-alive, then the connection is dropped.
        await readRequestHead(conn);
        served++;
        await conn.write(
          encoder.encode(
            "HTTP/1.1 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
          ),
        );
        if (variant.closeAfterMs > 0) await sleep(variant.closeAfterMs);
      });
      const gw = await startTestGateway({
        services: {
          s: {
            prefix: "/s",
            upstreams: [upstream.origin],
            timeoutMs: 2000,
            breaker: { failureThreshold: 1000 },
          },
        },
      });
      try {
        const statuses: number[] = [];
        for (let i = 0; i < 20; i++) {
          // Gaps around the upstream's close: before, during and after it.
          await sleep([0, 10, 60, 120][i % 4]);
          const result = await boundedFetch(`${gw.url}/s/${i}`, 3000);
          assert.ok(result.status === 200 || result.status === 502, JSON.stringify(result));
          if (result.status === 200) assert.equal(result.body, "ok");
          assert.ok(result.tookMs < 2500, `request ${i} took ${result.tookMs.toFixed(0)} ms`);
          statuses.push(result.status);
        }
        // With gaps longer than the upstream's idle timeout the stale connection is known dead
        // (or retried): those must succeed.
        const afterLongGap = statuses.filter((_, i) => i % 4 === 3);
        assert.ok(afterLongGap.every((s) => s === 200), JSON.stringify(statuses));
        assert.ok(served >= statuses.filter((s) => s === 200).length);
      } finally {
        await closeAll({ gw, upstream });
      }
    });
  }
}
