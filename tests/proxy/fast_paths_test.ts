/**
 * The request path's synchronous fast paths keep their meaning: both limiter slots taken at once
 * without a promise (and the first handed back when the second is refused), and the upstream
 * clients' header check skipped only for headers marked checked, never the method or target.
 *
 * @module
 */
import assert from "node:assert/strict";
import { acquireBoth, createLimiter, LimiterRejectedError } from "../../src/proxy/limiter.ts";
import { NO_BODY } from "../../src/proxy/outgoing_body.ts";
import { checkUpstreamRequest, type UpstreamRequest } from "../../src/proxy/upstream_client.ts";
import { ClientError } from "../../src/proxy/client_error.ts";

const limiter = (limit: number, maxPending = 0) =>
  createLimiter({ limit, maxPending, queueTimeoutMs: 1000 });

Deno.test("acquireBoth: free slots are taken synchronously, one release gives both back", () => {
  const first = limiter(1);
  const second = limiter(1);
  const release = acquireBoth(first, second, new AbortController().signal);
  assert.equal(typeof release, "function", "no promise while both have a free slot");
  assert.equal(first.active(), 1);
  assert.equal(second.active(), 1);
  (release as () => void)();
  assert.equal(first.active(), 0);
  assert.equal(second.active(), 0);
});

Deno.test("acquireBoth: a refused second slot hands the first back", async () => {
  const first = limiter(1);
  const second = limiter(1);
  const held = second.acquire() as () => void;
  const slot = acquireBoth(first, second, new AbortController().signal);
  assert.ok(slot instanceof Promise);
  await assert.rejects(slot, (error) => error instanceof LimiterRejectedError);
  assert.equal(first.active(), 0, "the first slot was given back");
  held();
});

Deno.test("acquireBoth: a first slot waited for comes with the second", async () => {
  const first = limiter(1, 1);
  const second = limiter(1);
  const held = first.acquire() as () => void;
  const slot = acquireBoth(first, second, new AbortController().signal);
  assert.ok(slot instanceof Promise);
  held();
  const release = await slot;
  assert.equal(first.active(), 1);
  assert.equal(second.active(), 1);
  release();
  assert.equal(first.active() + second.active(), 0);
});

Deno.test("NO_BODY: a frozen, replayable empty body", () => {
  assert.equal(NO_BODY.body, null);
  assert.equal(NO_BODY.replayable, true);
  assert.equal(NO_BODY.waitingOnClient(), false);
  assert.equal(NO_BODY.clientWaitMs(), 0);
  assert.equal(NO_BODY.clientError(), null);
  assert.ok(Object.isFrozen(NO_BODY));
});

function request(overrides: Partial<UpstreamRequest>): UpstreamRequest {
  return {
    origin: "http://127.0.0.1:1",
    pathAndQuery: "/a",
    method: "GET",
    headers: [],
    body: null,
    signal: new AbortController().signal,
    ...overrides,
  };
}

Deno.test("checkUpstreamRequest: headersChecked skips only the header check", () => {
  const badValue = request({ headers: [["x-a", "a\x01b"]] });
  assert.throws(() => checkUpstreamRequest(badValue), ClientError);
  checkUpstreamRequest({ ...badValue, headersChecked: true });
  assert.throws(() => checkUpstreamRequest(request({ headers: [["bad name", "v"]] })), ClientError);
  assert.throws(
    () => checkUpstreamRequest(request({ method: "CONNECT", headersChecked: true })),
    ClientError,
  );
  assert.throws(
    () => checkUpstreamRequest(request({ pathAndQuery: "/a b", headersChecked: true })),
    ClientError,
  );
});
