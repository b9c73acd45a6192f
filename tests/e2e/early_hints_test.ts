/**
 * `103 Early Hints` through a gateway process (`src/main.ts`, its own HTTP/1.1 server), from
 * raw upstreams over `Deno.listen`, read by a raw-socket client (a real client such as curl
 * would hide the interim heads):
 *
 * - the `http1` client: the 103 and its `Link` reach an HTTP/1.1 client as they come, before
 *   the upstream has even sent its 200 (the upstream holds it back until the client saw the 103),
 *   hop-by-hop fields of the 103 dropped;
 * - an HTTP/1.0 client gets no 103 (RFC 9110 §15.2), the 200 only;
 * - the `fetch` client drops interim responses: the 200 only;
 * - an upstream sending 20 x 103 fails the attempt after 16 passed: 502, counted by the breaker;
 * - with a retry, the failed attempt's 103 has gone out before the retry's 103 and 200.
 */
import assert from "node:assert/strict";
import { startGatewayProcess } from "../_helpers/gateway.ts";
import { readRequestHead, startRawUpstream } from "../_helpers/upstream.ts";
import { closeAll, within } from "../_helpers/wait.ts";
import { RawClient, type RawResponse } from "../server/_raw_client.ts";

const encoder = new TextEncoder();
const HINT = "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n" +
  "Connection: x-trace\r\nX-Trace: 1\r\n\r\n";
const FINAL = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nfinal";

/**
 * Answers `/wait` with a 103, then the 200 once `release()` was called (at most 5 s later);
 * any other path with `hints` x 103 and the 200 at once.
 */
function startHintsUpstream(hints: number) {
  let release: () => void = () => {};
  const upstream = startRawUpstream(async (conn) => {
    while (true) {
      const head = await readRequestHead(conn);
      if (head === "") return;
      if (head.startsWith("GET /wait ")) {
        const released = new Promise<void>((resolve) => release = resolve);
        await conn.write(encoder.encode(HINT));
        await within(released, 5000, "the client reading the 103");
      } else {
        await conn.write(encoder.encode(HINT.repeat(hints)));
      }
      await conn.write(encoder.encode(FINAL));
    }
  });
  return { ...upstream, release: () => release() };
}

/** Sends a 103 and closes on odd requests; a 103 and the 200 on even ones. */
function startFlakyUpstream() {
  let requests = 0;
  return startRawUpstream(async (conn) => {
    const head = await readRequestHead(conn);
    if (head === "") return;
    // Anything else (a health probe, should one be configured) is answered plainly.
    if (!head.startsWith("GET /x ")) return void await conn.write(encoder.encode(FINAL));
    const n = requests++;
    await conn.write(encoder.encode(`HTTP/1.1 103 Early Hints\r\nLink: </attempt-${n}>\r\n\r\n`));
    if (n % 2 === 0) return; // closed after an interim response: the attempt fails
    await conn.write(encoder.encode(FINAL));
  });
}

/** Sends `request` on a new connection and reads every response up to the final one. */
async function exchange(port: number, request: string): Promise<RawResponse[]> {
  const client = await RawClient.connect(port);
  try {
    await client.send(request);
    const responses: RawResponse[] = [];
    while (responses.length === 0 || responses[responses.length - 1].status < 200) {
      responses.push(await client.response({ ms: 5000 }));
    }
    return responses;
  } finally {
    client.close();
  }
}

Deno.test("103 Early Hints through a gateway process", async (t) => {
  const hints = startHintsUpstream(1);
  const flood = startHintsUpstream(20);
  const flaky = startFlakyUpstream();
  let gateway: Awaited<ReturnType<typeof startGatewayProcess>> | null = null;
  try {
    const service = (prefix: string, origin: string, upstreamClient: string) => ({
      prefix,
      upstreams: [origin],
      stripPrefix: true,
      upstreamClient,
    });
    gateway = await startGatewayProcess({
      // One thread: the flood step expects the third call refused right after the second
      // failure; with workers a call on the other worker can pass in the few ms the trip takes
      // to reach it (README, "Workers").
      workers: 1,
      defaults: { breaker: { failureThreshold: 2 }, timeoutMs: 10_000 },
      services: {
        "hints-http1": service("/h1", hints.origin, "http1"),
        "hints-fetch": service("/hf", hints.origin, "fetch"),
        flood: service("/flood", flood.origin, "http1"),
        flaky: {
          ...service("/flaky", flaky.origin, "http1"),
          retry: { attempts: 1, baseDelayMs: 1, maxDelayMs: 5 },
        },
      },
    });
    const port = Number(new URL(gateway.url).port);

    await t.step("http1 client, HTTP/1.1: the 103 arrives before the upstream's 200", async () => {
      const client = await RawClient.connect(port);
      try {
        await client.send("GET /h1/wait HTTP/1.1\r\nHost: gw\r\n\r\n");
        // The upstream sends its 200 only after this: a gateway that held the 103 back (or
        // dropped it) fails here.
        const early = await client.response({ ms: 5000 });
        assert.equal(early.status, 103, early.head);
        assert.deepEqual(early.fields, [["link", "</style.css>; rel=preload; as=style"]]);
        hints.release();
        const final = await client.response({ ms: 5000 });
        assert.equal(final.status, 200, final.head);
        assert.equal(final.body, "final");
      } finally {
        client.close();
      }
    });

    await t.step("http1 client, HTTP/1.0 client: no 103, the 200 only", async () => {
      const responses = await exchange(port, "GET /h1/page HTTP/1.0\r\nHost: gw\r\n\r\n");
      assert.deepEqual(responses.map((r) => r.status), [200]);
      assert.equal(responses[0].body, "final");
    });

    await t.step("fetch client: interim responses are dropped, the 200 passes", async () => {
      const responses = await exchange(
        port,
        "GET /hf/page HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
      );
      assert.deepEqual(responses.map((r) => r.status), [200]);
      assert.equal(responses[0].body, "final");
    });

    await t.step("20 x 103: 502 after 16 passed, counted by the breaker", async () => {
      for (let i = 0; i < 2; i++) {
        const responses = await exchange(
          port,
          "GET /flood/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
        );
        const statuses = responses.map((r) => r.status);
        assert.deepEqual(statuses, [...Array(16).fill(103), 502], statuses.join(" "));
        const final = responses[16];
        assert.ok(
          final.fields.some(([n, v]) => n === "x-breakwater-error" && v === "upstream_unreachable"),
          final.head,
        );
      }
      // failureThreshold 2: both attempts counted, so the breaker is open now.
      const third = await exchange(
        port,
        "GET /flood/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
      );
      assert.deepEqual(third.map((r) => r.status), [503]);
      assert.ok(
        third[0].fields.some(([n, v]) => n === "x-breakwater-error" && v === "breaker_open"),
      );
    });

    await t.step("a retried request: the failed attempt's 103, then the retry's", async () => {
      const responses = await exchange(
        port,
        "GET /flaky/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
      );
      assert.deepEqual(responses.map((r) => r.status), [103, 103, 200]);
      assert.deepEqual(responses.slice(0, 2).map((r) => r.fields), [
        [["link", "</attempt-0>"]],
        [["link", "</attempt-1>"]],
      ]);
      assert.equal(responses[2].body, "final");
    });
  } finally {
    await gateway?.stop();
    await closeAll({ hints, flood, flaky });
  }
});
